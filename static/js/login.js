// Sign-in page.
import { ApiError, describeError, get, initShell, post } from "./api.js";

const form = document.getElementById("login-form");
const errorEl = document.getElementById("login-error");

function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // Only this site: resolve the way the browser will (it reads "\\" as "/" and drops tabs and newlines, so
  // "/\\evil.example" is another host) and keep the path of a same-origin result. Anything else goes home.
  try {
    const url = new URL(next, location.origin);
    // A path that itself starts with "//" (e.g. from "/.//evil.example") would be read as a host again.
    if (url.origin === location.origin) return "/" + url.pathname.replace(/^\/+/, "") + url.search + url.hash;
  } catch { /* not a URL at all */ }
  return "/";
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
