// One table of commands drives both the keyboard and the `?` dialog: a key works exactly when the dialog
// lists it. A command is {keys: ["Ctrl+Z", "ArrowUp", "?", ...], label, what, run(event) -> false if unhandled}.
// Rows with no keys (mouse gestures) appear in the dialog only. No DOM access except renderKeymap.

// The id of a key press: "ctrl+shift+z", "arrowup", "r", "?". Shift counts for named keys and with Ctrl; for
// a printable key alone it is part of the character ("?" is Shift+/, "R" and "r" are one key).
export function eventKeyId(e) {
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key.toLowerCase();
  const ctrl = e.ctrlKey || e.metaKey;
  const shift = e.shiftKey && (e.key.length > 1 || ctrl);
  return [ctrl && "ctrl", shift && "shift", key].filter(Boolean).join("+");
}

// The id of a key as the table writes it: "Ctrl+Shift+Z" -> "ctrl+shift+z", "Space" -> " ".
export function specKeyId(spec) {
  const plus = spec.endsWith("+");
  const parts = (plus ? spec.slice(0, -1) : spec).split("+").filter(Boolean);
  const key = plus ? "+" : parts.pop();
  const mods = parts.map((p) => p.toLowerCase());
  const name = key === "Space" ? " " : key.toLowerCase();
  return [mods.includes("ctrl") && "ctrl", mods.includes("shift") && "shift", name].filter(Boolean).join("+");
}

// key id -> command, refusing a key bound twice (the table is the one place that says what a key does).
export function buildKeyIndex(commands) {
  const index = new Map();
  for (const command of commands) {
    for (const spec of command.keys || []) {
      const id = specKeyId(spec);
      if (index.has(id)) throw new Error(`key ${spec} is bound twice`);
      index.set(id, command);
    }
  }
  return index;
}

// Fills the key map dialog's table body from the same commands.
export function renderKeymap(tbody, commands) {
  tbody.replaceChildren();
  for (const command of commands) {
    if (!command.what) continue;
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    const kbd = document.createElement("kbd");
    kbd.textContent = command.label || (command.keys || []).join(" / ");
    th.appendChild(kbd);
    const td = document.createElement("td");
    td.textContent = command.what;
    tr.append(th, td);
    tbody.appendChild(tr);
  }
}
