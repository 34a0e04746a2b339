// Who is using the page. Links printed by `livesell serve` carry a token in the URL fragment
// (`#token=…`, never sent to the server in a request line); the page keeps it and removes it from
// the address bar so it is not shared along with the URL.

import { api, setToken } from "./api.js";
import { config } from "./config.js";

const PREFIX = "livesell.token.";

export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const json = decodeURIComponent(
      Array.from(atob(padded), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const value = JSON.parse(json);
    return { sub: String(value.sub || ""), roles: value.roles || [], exp: value.exp || null };
  } catch {
    return null;
  }
}

function usable(token) {
  const found = token && claims(token);
  return Boolean(found && found.sub && (!found.exp || found.exp * 1000 > Date.now() + 5000));
}

// The page's token: from `#token=` (then stored under `slot`), else the stored one, else null.
export function takeToken(slot) {
  const hash = new URLSearchParams(window.location.hash.slice(1));
  const fromUrl = hash.get("token");
  if (fromUrl) {
    hash.delete("token");
    const rest = hash.toString();
    const clean = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
    window.history.replaceState(null, "", clean);
    if (usable(fromUrl)) localStorage.setItem(PREFIX + slot, fromUrl);
  }
  const stored = localStorage.getItem(PREFIX + slot);
  if (stored && !usable(stored)) {
    localStorage.removeItem(PREFIX + slot);
    return null;
  }
  setToken(stored);
  return stored;
}

export function storeToken(slot, token) {
  localStorage.setItem(PREFIX + slot, token);
  setToken(token);
}

export function signOut(slot) {
  localStorage.removeItem(PREFIX + slot);
  setToken(null);
}

// Dev mode only: mint a token for a name the person picks, as the dev endpoint allows.
export async function devSignIn(slot, sub, roles) {
  const minted = await api.devToken(sub, roles);
  storeToken(slot, minted.token);
  return minted.token;
}

// The token ran out and the page has no way to get another: the person opens a fresh link.
export class SessionExpired extends Error {
  constructor() {
    super("the session's token has expired");
    this.code = "session_expired";
  }
}

// The hub connection's tokens for the page's `slot` (live.js hands `getToken` to the SDK, which
// calls it when the hub's `ttl` runs out, or to reconnect after its token expired):
//   - a token stored since the connection got its own (a new `#token=` link opened in another
//     tab, a sign-in) is used as it is;
//   - in dev mode the page mints a new one for the same user and roles (POST /api/dev/token), as
//     its sign-in form does;
//   - otherwise the page cannot make tokens: SessionExpired, and the badge says so. An app that
//     integrates livesell supplies tokens itself: a link with a fresh `#token=`, or a token it
//     writes to localStorage["livesell.token.<slot>"], which this picks up at the next refresh.
// A guest (no token) connects anonymously and stays a guest.
export function hubTokens(slot) {
  let given = null; // the token the connection was last given
  return {
    initial() {
      given = localStorage.getItem(PREFIX + slot);
      return given || "";
    },
    async getToken() {
      const stored = localStorage.getItem(PREFIX + slot);
      if (!stored) return "";
      if (stored !== given && usable(stored)) {
        given = stored;
        setToken(stored);
        return stored;
      }
      const holder = claims(stored);
      const found = await config().catch(() => ({ dev: false }));
      if (!found.dev || !holder || !holder.sub) throw new SessionExpired();
      const minted = await api.devToken(holder.sub, holder.roles);
      storeToken(slot, minted.token);
      given = minted.token;
      return given;
    },
  };
}
