// Warden console: live approvals (server-sent events) and a copy button for new keys.
// Every action works without this file: the pages are plain forms.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Approvals: the server sends the pending list as HTML whenever it changes.
  const pending = document.getElementById("pending");
  if (pending && window.EventSource) {
    const events = new EventSource("/approvals/events");
    events.addEventListener("pending", (event) => {
      pending.innerHTML = event.data;
      pending.dataset.live = "yes";
    });
    events.onerror = () => {
      pending.dataset.live = "no";
    };
  }

  // A key shown once: copy it to the clipboard.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      if (!field) return;
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Select and copy";
      }
    });
  }
});
