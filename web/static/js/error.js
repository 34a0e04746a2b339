// The error page: the server names the error in `<body data-error>`; the words come from i18n.

import { installLangSwitch, onLangChange, t } from "./i18n.js";

const KNOWN = new Set(["not_found", "link_not_found", "room_not_found", "click_rate_limited"]);

function render() {
  const code = KNOWN.has(document.body.dataset.error) ? document.body.dataset.error : "not_found";
  const title = t(`errorPage.${code}.title`);
  document.getElementById("error-title").textContent = title;
  document.getElementById("error-text").textContent = t(`errorPage.${code}.text`);
  document.title = `${title} · livesell`;
}

installLangSwitch();
onLangChange(render);
render();
