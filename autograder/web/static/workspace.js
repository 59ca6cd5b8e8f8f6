// The workspace's only script (the page's CSP forbids inline ones): JSON posts with the XSRF token,
// autosave of a score with its version, and the grading keys.
"use strict";
const xsrf = document.querySelector('meta[name="xsrf"]').content;

async function post(url, body) {
  const response = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-XSRF-Token": xsrf}, body: JSON.stringify(body)});
  const type = response.headers.get("content-type") || "";
  return {status: response.status, body: type.startsWith("application/json") ? await response.json() : await response.text()};
}

// Forms marked data-post: their fields as JSON; the page reloads to show what changed.
for (const form of document.querySelectorAll("form[data-post]")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const shown = form.querySelector(".status");
    const reply = await post(form.dataset.post, Object.fromEntries(new FormData(form)));
    if (reply.status === 200) { location.reload(); return; }
    shown.textContent = typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
    shown.classList.add("bad");
  });
}

const grading = document.getElementById("grading");
if (grading) {
  const items = [...grading.querySelectorAll("input.item")];
  const adjustment = document.getElementById("adjustment"), comment = document.getElementById("comment");
  const saved = document.getElementById("saved"), conflict = document.getElementById("conflict");
  let pending = null, saving = Promise.resolve();

  const mine = () => ({rubric: items.filter((i) => i.checked).map((i) => Number(i.value)),
                       adjustment: Number(adjustment.value || 0), comment: comment.value});
  const describe = (s) => `points: ${s.points ?? "?"}\nrubric: ${(s.labels || s.rubric).join("; ") || "none"}\n` +
                          `adjustment: ${s.adjustment}\ncomment: ${s.comment}`;

  function save() {
    clearTimeout(pending); pending = null;
    const body = {...mine(), version: Number(grading.dataset.version)};
    saved.textContent = "saving…";
    saving = saving.then(async () => {
      const reply = await post(grading.dataset.url, body);
      if (reply.status === 200) {
        grading.dataset.version = reply.body.version;
        document.getElementById("points").textContent = reply.body.points;
        saved.textContent = `saved by ${reply.body.grader} (version ${reply.body.version})`;
      } else if (reply.status === 409) {
        saved.textContent = "not saved: someone else saved first";
        document.getElementById("their-grader").textContent = reply.body.theirs.grader;
        document.getElementById("theirs").textContent = describe(reply.body.theirs);
        const labels = items.filter((i) => body.rubric.includes(Number(i.value)))
                            .map((i) => i.parentElement.querySelector(".label").textContent);
        document.getElementById("yours").textContent = describe({...body, points: null, labels});
        conflict.dataset.version = reply.body.theirs.version;
        conflict.hidden = false;
      } else {
        saved.textContent = `not saved: ${typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body)}`;
      }
    });
    return saving;
  }
  const later = () => { clearTimeout(pending); pending = setTimeout(save, 400); };
  for (const item of items) item.addEventListener("change", save);
  adjustment.addEventListener("change", save);
  comment.addEventListener("input", later);
  document.getElementById("keep-mine").addEventListener("click", () => {
    grading.dataset.version = conflict.dataset.version; conflict.hidden = true; save();
  });
  document.getElementById("take-theirs").addEventListener("click", () => location.reload());

  async function go(key) {
    if (!key) return;
    if (pending) await save(); else await saving;
    location.href = grading.dataset.base + key;
  }
  // Digits by their key position (event.code), so AZERTY's unshifted digit row works too; letters by the
  // character typed (event.key), falling back to the key position on layouts without Latin letters.
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (typing) { if (event.key === "Escape") document.activeElement.blur(); return; }
    const digit = /^(?:Digit|Numpad)([1-9])$/.exec(event.code);
    const letter = /^[a-z?]$/i.test(event.key) ? event.key.toLowerCase() : (/^Key([A-Z])$/.exec(event.code) || [])[1]?.toLowerCase();
    if (digit && items[digit[1] - 1]) {
      items[digit[1] - 1].checked = !items[digit[1] - 1].checked; save();
    } else if (event.key === "?" || (event.code === "Slash" && event.shiftKey)) {
      const help = document.getElementById("help"); help.hidden = !help.hidden;
    } else if (letter === "n") { go(grading.dataset.nextUngraded);
    } else if (letter === "j") { go(grading.dataset.next);
    } else if (letter === "k") { go(grading.dataset.previous);
    } else if (letter === "c") { comment.focus();
    } else { return; }
    event.preventDefault();
  });
}
