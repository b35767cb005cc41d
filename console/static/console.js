// Hemascope console: overlay opacity sliders and drag-and-drop uploads. No inline scripts (the
// Content-Security-Policy forbids them); everything is wired here by event delegation, so it also works on
// result cards that htmx swaps in.
(function () {
  "use strict";

  document.addEventListener("input", function (event) {
    var slider = event.target;
    if (!slider.classList || !slider.classList.contains("opacity")) return;
    var overlay = document.getElementById(slider.getAttribute("data-target"));
    if (overlay) overlay.style.opacity = String(Number(slider.value) / 100);
  });

  function describe(input, note) {
    var count = input.files ? input.files.length : 0;
    if (note) note.textContent = count === 1 ? "1 image chosen" : count + " images chosen";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var zone = document.getElementById("dropzone");
    var input = document.getElementById("images");
    var note = document.getElementById("chosen");
    if (!zone || !input) return;
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.remove("dragging");
      });
    });
    zone.addEventListener("drop", function (event) {
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        describe(input, note);
      }
    });
    input.addEventListener("change", function () { describe(input, note); });
  });
})();
