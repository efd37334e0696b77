// Usher control panel: copy buttons, the sign-in method switch, and the live
// refresh of the overview's charts. Every page works without this file; it
// only adds convenience. No inline script anywhere (the CSP forbids it).
"use strict";

(function () {
  // -- copy buttons: <button data-copy="ID"> copies the value of #ID --------
  async function copyText(source) {
    const text = "value" in source ? source.value : source.textContent;
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) {
      // No clipboard API (plain http to a remote host): select the text so
      // that Ctrl+C copies it, and let execCommand try. A value behind a
      // Show control is revealed first: hidden text cannot be selected.
      const holder = source.closest("details");
      if (holder) {
        holder.open = true;
      }
      if (typeof source.select === "function") {
        source.select();
      }
      try {
        return document.execCommand("copy");
      } catch (ignored) {
        return false;
      }
    }
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("[data-copy]");
    if (!button) {
      return;
    }
    const source = document.getElementById(button.dataset.copy);
    if (!source) {
      return;
    }
    const copied = await copyText(source);
    const status = document.getElementById(button.dataset.copy + "-status");
    button.textContent = copied ? "Copied" : "Copy";
    if (status) {
      status.textContent = copied
        ? "Copied to the clipboard."
        : "Press Ctrl+C (or ⌘C) to copy the selected text.";
    }
    window.setTimeout(function () {
      button.textContent = "Copy";
    }, 2000);
  });

  // -- sign-in: show only the fields of the chosen method ------------------
  const signIn = document.querySelector("[data-sign-in]");
  if (signIn) {
    const sync = function () {
      const chosen = signIn.querySelector('input[name="method"]:checked');
      const method = chosen ? chosen.value : "password";
      for (const group of signIn.querySelectorAll("fieldset[data-method]")) {
        const active = group.dataset.method === method;
        group.hidden = !active;
        group.disabled = !active; // a disabled fieldset is not submitted
      }
    };
    signIn.addEventListener("change", sync);
    sync();
  }

  // -- overview: re-fetch the charts fragment while the page is visible -----
  const region = document.querySelector("[data-live]");
  if (!region) {
    return;
  }
  const status = document.getElementById("live-status");
  const interval = Number(region.dataset.interval) || 5000;
  let timer = null;
  let failures = 0;
  let stopped = false;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function schedule() {
    if (timer === null && !stopped && !document.hidden) {
      // Back off while Usher does not answer: 1x, 2x, 4x … up to 12x.
      const delay = interval * Math.min(2 ** failures, 12);
      timer = window.setTimeout(refresh, delay);
    }
  }

  async function refresh() {
    timer = null;
    if (document.hidden) {
      return; // visibilitychange restarts the loop
    }
    try {
      const response = await fetch(region.dataset.src, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "text/html" },
      });
      if (response.status === 401) {
        stopped = true;
        say("Your session has ended. Reload the page to sign in again.");
        return;
      }
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      if (!response.ok) {
        // Usher explains some refusals (a view stopped for taking too
        // long): show its sentence, and back off as for any failure.
        const message = doc.querySelector("[data-message]");
        failures += 1;
        say(message ? message.textContent : "Live updates paused: Usher did not answer. Retrying…");
        schedule();
        return;
      }
      const fresh = doc.querySelector(".charts");
      const current = region.querySelector(".charts");
      // Swap only when the numbers changed, and never under the keyboard
      // focus: replacing the focused link would throw the reader back to
      // the top of the page.
      if (
        fresh &&
        current &&
        fresh.dataset.digest !== current.dataset.digest &&
        !region.contains(document.activeElement)
      ) {
        const wasOpen = current.querySelector("details[open]") !== null;
        const adopted = document.adoptNode(fresh);
        if (wasOpen) {
          const details = adopted.querySelector("details");
          if (details) {
            details.open = true;
          }
        }
        current.replaceWith(adopted);
      }
      failures = 0;
      say("Live · updated " + new Date().toISOString().slice(11, 19) + " UTC");
    } catch (error) {
      failures += 1;
      say("Live updates paused: Usher did not answer. Retrying…");
    }
    schedule();
  }

  // A hidden tab asks nothing of Usher: the pending refresh is dropped, and
  // one refresh runs as soon as the tab is visible again.
  document.addEventListener("visibilitychange", function () {
    window.clearTimeout(timer);
    timer = null;
    if (document.hidden) {
      say("Paused while this tab is hidden.");
    } else if (!stopped) {
      refresh();
    }
  });
  schedule();
})();
