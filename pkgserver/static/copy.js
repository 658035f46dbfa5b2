// Copy buttons: progressive enhancement. Without JavaScript the buttons stay hidden and the
// commands are plain, selectable text.
(function () {
  "use strict";
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http on an intranet host is not a secure context: no Clipboard API there.
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.top = "-1000px";
      document.body.appendChild(area);
      area.select();
      try {
        if (document.execCommand("copy")) { resolve(); } else { reject(new Error("copy refused")); }
      } catch (err) {
        reject(err);
      } finally {
        document.body.removeChild(area);
      }
    });
  }
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(source.textContent).then(function () {
        button.textContent = "Copied";
        button.classList.add("done");
      }, function () {
        button.textContent = "Select and copy";
      });
      setTimeout(function () { button.textContent = "Copy"; button.classList.remove("done"); }, 2000);
    });
  });
}());
