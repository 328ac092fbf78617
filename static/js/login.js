// Sign-in page.
import { ApiError, describeError, get, initShell, post } from "./api.js";

const form = document.getElementById("login-form");
const errorEl = document.getElementById("login-error");

function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // Only same-site paths: an open redirect would let a link send users anywhere after sign-in.
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

async function start() {
  await initShell({ requireLogin: false });
  try {
    const me = await get("/api/auth/me", { allow401: true });
    if (me && me.user && new URLSearchParams(location.search).get("stay") !== "1") location.replace(nextUrl());
  } catch { /* not signed in: show the form */ }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorEl.hidden = true;
  const body = { username: form.username.value.trim(), password: form.password.value };
  try {
    await post("/api/auth/login", body, { allow401: true });
    location.assign(nextUrl());
  } catch (err) {
    errorEl.textContent = err instanceof ApiError && err.status === 401 ? "Wrong user name or password." : describeError(err);
    errorEl.hidden = false;
  }
});

start();
