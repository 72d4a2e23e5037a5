// Progressive enhancement only: every page works without it.
// After a refused form, bring its error summary into view and give it the focus,
// so keyboard and screen-reader users land on what to fix.
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.querySelector("[data-focus-first]");
  if (summary) {
    summary.setAttribute("tabindex", "-1");
    // show the whole form it belongs to (its heading too), not just the message
    var box = summary.closest("section, details, form") || summary;
    box.scrollIntoView({ block: "start" });
    summary.focus({ preventScroll: true });
  }
});
