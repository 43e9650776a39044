// Solves the gate's proof-of-work challenge (ALTCHA's protocol) for every form that
// carries a `challenge` field, and fills the field before the form goes.
(function () {
  "use strict";
  if (!window.crypto || !crypto.subtle || !window.TextEncoder) return;
  var encoder = new TextEncoder();
  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), function (b) {
      return b.toString(16).padStart(2, "0");
    }).join("");
  }
  async function solve(field) {
    var url = field.dataset.url + "?tenant=" + encodeURIComponent(field.dataset.tenant || "");
    var response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw new Error("no challenge: " + response.status);
    var c = await response.json();
    for (var n = 0; n <= c.maxnumber; n++) {
      var digest = await crypto.subtle.digest("SHA-256", encoder.encode(c.salt + n));
      if (hex(digest) === c.challenge) {
        return btoa(JSON.stringify({
          algorithm: c.algorithm, challenge: c.challenge, number: n,
          salt: c.salt, signature: c.signature
        }));
      }
    }
    throw new Error("challenge not solved");
  }
  document.querySelectorAll("input[name=challenge][data-url]").forEach(function (field) {
    var form = field.form;
    var pending = solve(field).then(function (payload) { field.value = payload; });
    form.addEventListener("submit", function (event) {
      if (field.value) return;
      // Not solved yet: wait, then send; a failure is sent too, and the gate says why.
      event.preventDefault();
      form.setAttribute("aria-busy", "true");
      var go = function () { form.submit(); };
      pending.then(go, go);
    });
  });
})();
