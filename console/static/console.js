// Hemascope console: overlay opacity sliders, detected-box switches, white-cell clicks, the explain choices
// and drag-and-drop uploads. No inline scripts (the Content-Security-Policy forbids them); everything is wired here by event
// delegation, so it also works on result cards that htmx swaps in.
(function () {
  "use strict";

  document.addEventListener("input", function (event) {
    var slider = event.target;
    if (!slider.classList || !slider.classList.contains("opacity")) return;
    var overlay = document.getElementById(slider.getAttribute("data-target"));
    if (overlay) overlay.style.opacity = String(Number(slider.value) / 100);
  });

  // detected boxes: the switch under a picture shows or hides its SVG layer
  document.addEventListener("change", function (event) {
    var toggle = event.target;
    if (!toggle.classList || !toggle.classList.contains("boxes-toggle")) return;
    var layer = document.getElementById(toggle.getAttribute("data-target"));
    if (layer) layer.classList.toggle("off", !toggle.checked);
  });

  // a click on a white cell's box presses its classify button (the buttons are the keyboard's way in)
  document.addEventListener("click", function (event) {
    var box = event.target;
    if (!box.classList || !box.classList.contains("white")) return;
    var button = document.getElementById(box.getAttribute("data-button"));
    if (!button) return;
    var layer = box.ownerSVGElement;
    if (layer) {
      layer.querySelectorAll("rect.chosen").forEach(function (other) { other.classList.remove("chosen"); });
    }
    box.classList.add("chosen");
    button.click();
  });

  // the methods a chosen model does not accept are disabled (the console checks the choice again)
  function syncMethods(form) {
    var model = form.querySelector("select.explain-model");
    var method = form.querySelector("select.explain-method");
    if (!model || !method) return;
    Array.prototype.forEach.call(method.options, function (option) {
      var models = option.getAttribute("data-models");
      if (models === null) return;
      option.disabled = model.value !== "" && models.split(" ").indexOf(model.value) < 0;
      if (option.disabled && option.selected) method.value = "";
    });
  }

  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.classList && select.classList.contains("explain-model") && select.form) syncMethods(select.form);
  });

  function syncAll(root) {
    root.querySelectorAll("select.explain-model").forEach(function (select) {
      if (select.form) syncMethods(select.form);
    });
  }

  document.addEventListener("htmx:load", function (event) { syncAll(event.target); });

  function plural(count, one, many) {
    return count + " " + (count === 1 ? one : many);
  }

  function describe(input, note) {
    var files = input.files ? Array.prototype.slice.call(input.files) : [];
    var zips = files.filter(function (file) {
      return /\.zip$/i.test(file.name) || /zip/.test(file.type);
    }).length;
    var images = files.length - zips;
    var parts = [];
    if (images || !zips) parts.push(plural(images, "image", "images"));
    if (zips) parts.push(plural(zips, "zip", "zips"));
    if (note) note.textContent = parts.join(" and ") + " chosen";
  }

  document.addEventListener("DOMContentLoaded", function () {
    syncAll(document);
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
