// The room's chat panel (弹幕): messages, the send box, the like button, the pinned notice; on
// the host console also moderation (click a message: delete, mute, ban; slow mode, blocked
// words, close, pin). Text is always set as text, never as HTML.
//
// The page hands in its hub connection as two functions, so the panel works with whichever
// client the page uses:
//   subscribe(channel, { onSubscribed({ data }), onPublication(data), onError(err) })
//   publish(channel, data) → Promise (rejects with an error carrying the protocol `code`)
import { request } from "./api.js";
import { lang, onLangChange } from "./i18n.js";

const STRINGS = {
  en: {
    title: "Chat",
    placeholder: "Say something…",
    send: "Send",
    like: "Like",
    signIn: "Sign in to chat.",
    refused101: "Sign in to chat.",
    refused103: "You cannot post here right now",
    refused106: "Slow down a little",
    refused107: "That message cannot be posted",
    slow: "Slow mode: one message every {s} s",
    closed: "Chat is closed",
    sampled: "Busy chat: showing {shown} of {received} messages a second",
    host: "host",
    moderator: "mod",
    delete: "Delete",
    mute: "Mute 5 min",
    ban: "Ban",
    moderation: "Chat moderation",
    slowMode: "Slow mode (s)",
    blockedWords: "Blocked words (comma separated)",
    closeChat: "Close chat",
    pinText: "Pinned notice",
    pin: "Pin",
    unpin: "Unpin",
    save: "Save",
    done: "Done",
  },
  zh: {
    title: "聊天",
    placeholder: "说点什么…",
    send: "发送",
    like: "点赞",
    signIn: "登录后即可聊天。",
    refused101: "登录后即可聊天。",
    refused103: "你暂时不能发言",
    refused106: "发言太快了，请稍等",
    refused107: "这条消息不能发送",
    slow: "慢速模式：每 {s} 秒一条",
    closed: "聊天已关闭",
    sampled: "聊天太热闹：每秒显示 {received} 条中的 {shown} 条",
    host: "主播",
    moderator: "管理",
    delete: "删除",
    mute: "禁言 5 分钟",
    ban: "踢出",
    moderation: "聊天管理",
    slowMode: "慢速模式（秒）",
    blockedWords: "屏蔽词（逗号分隔）",
    closeChat: "关闭聊天",
    pinText: "置顶公告",
    pin: "置顶",
    unpin: "取消置顶",
    save: "保存",
    done: "已完成",
  },
};

export function chatText(key, vars = {}) {
  const table = STRINGS[lang()] || STRINGS.en;
  const text = table[key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

const MAX_SHOWN = 200; // messages kept on the page
const LIKE_FLUSH_MS = 1000; // taps are batched into one POST a second

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function mountChat({ root, roomId, subscribe, publish, signedIn, moderate = false }) {
  const channel = `chat:${roomId}`;
  const messages = new Map(); // id → li
  root.classList.add("chat-panel");
  root.replaceChildren();
  const heading = el("h3", "chat-title");
  const pinned = el("p", "chat-pinned");
  pinned.hidden = true;
  const status = el("p", "chat-status muted");
  status.hidden = true;
  const list = el("ul", "chat-list");
  list.setAttribute("aria-live", "polite");
  const form = el("form", "chat-form");
  const input = el("input", "chat-input");
  input.maxLength = 200;
  input.autocomplete = "off";
  const send = el("button", "chat-send");
  send.type = "submit";
  const like = el("button", "chat-like");
  like.type = "button";
  const likeCount = el("span", "chat-like-count", "0");
  const error = el("p", "form-error chat-error");
  error.setAttribute("role", "alert");
  error.hidden = true;
  form.append(input, send, like);
  root.append(heading, pinned, status, list, error, form);
  let tools = null;
  if (moderate) tools = mountModeration(root, roomId);

  let settings = { slow_mode_s: 0, closed: false };
  let stats = null;
  let pendingLikes = 0;
  let likeTimer = null;

  function label() {
    heading.textContent = chatText("title");
    input.placeholder = signedIn ? chatText("placeholder") : chatText("signIn");
    input.disabled = !signedIn;
    send.textContent = chatText("send");
    send.disabled = !signedIn;
    like.textContent = `♥ ${chatText("like")} `;
    like.append(likeCount);
    like.disabled = !signedIn;
    const notes = [];
    if (settings.closed) notes.push(chatText("closed"));
    if (settings.slow_mode_s > 0) notes.push(chatText("slow", { s: settings.slow_mode_s }));
    if (stats && stats.received > stats.shown) notes.push(chatText("sampled", stats));
    status.textContent = notes.join(" · ");
    status.hidden = notes.length === 0;
    for (const li of messages.values()) {
      const role = li.querySelector(".chat-role");
      if (role) role.textContent = chatText(role.dataset.role);
    }
    tools?.label();
  }

  function add(message) {
    if (!message || message.type !== "chat.message" || messages.has(message.id)) return;
    const li = el("li", "chat-message");
    li.dataset.id = message.id;
    li.dataset.user = message.user.id;
    const name = el("span", "chat-name", message.user.name);
    li.append(name);
    if (message.user.role !== "viewer") {
      const role = el("span", `chat-role chat-role-${message.user.role}`);
      role.dataset.role = message.user.role;
      role.textContent = chatText(message.user.role);
      li.append(role);
    }
    li.append(el("span", "chat-text", message.text));
    if (tools) li.addEventListener("click", () => tools.target(message, li));
    messages.set(message.id, li);
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.append(li);
    while (messages.size > MAX_SHOWN) {
      const [oldest, node] = messages.entries().next().value;
      node.remove();
      messages.delete(oldest);
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function setPinned(notice) {
    pinned.textContent = notice ? `📌 ${notice.text}` : "";
    pinned.hidden = !notice;
    tools?.pinned(notice);
  }

  function apply(event) {
    switch (event?.type) {
      case "chat.message":
        add(event);
        break;
      case "chat.deleted":
        messages.get(event.id)?.remove();
        messages.delete(event.id);
        break;
      case "chat.pinned":
        setPinned(event.pinned);
        break;
      case "chat.unpinned":
        setPinned(null);
        break;
      case "chat.settings":
        settings = event.settings;
        label();
        break;
      case "chat.stats":
        stats = event;
        label();
        break;
      default:
        break;
    }
  }

  function showError(err) {
    const code = err && err.code;
    const key = [101, 103, 106, 107].includes(code) ? `refused${code}` : null;
    // the hub's own words say until when (a mute, slow mode)
    error.textContent = key ? chatText(key) + (err.message ? ` (${err.message})` : "") : String(err?.message || err);
    error.hidden = false;
    setTimeout(() => (error.hidden = true), 5000);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    // cleared now, so the next message can be typed while this one is sent (cleared on the
    // reply, it would take whatever was typed meanwhile with it)
    input.value = "";
    publish(channel, { text }).then(
      () => {
        error.hidden = true;
      },
      (err) => {
        if (!input.value) input.value = text; // refused: back in the box, to send again
        showError(err);
      },
    );
  });

  like.addEventListener("click", () => {
    pendingLikes += 1;
    likeCount.textContent = String(Number(likeCount.textContent) + 1);
    if (likeTimer) return;
    likeTimer = setTimeout(() => {
      likeTimer = null;
      const count = Math.min(pendingLikes, 100);
      pendingLikes -= count;
      request("POST", `/api/rooms/${roomId}/likes`, { body: { count } }).then(
        (reply) => (likeCount.textContent = String(reply.total + pendingLikes)),
        showError,
      );
    }, LIKE_FLUSH_MS);
  });

  const subscription = subscribe(channel, {
    onSubscribed: ({ data }) => {
      if (!data || !Array.isArray(data.messages)) return;
      for (const message of data.messages) add(message);
      setPinned(data.pinned);
      settings = data.settings || settings;
      label();
    },
    onPublication: (data) => apply(data),
    onError: showError,
  });

  onLangChange(label);
  label();
  return {
    subscription,
    // room events the page receives on `room:{id}` (likes.changed) may be passed on here
    roomEvent(event) {
      if (event?.type === "likes.changed" && typeof event.total === "number") {
        likeCount.textContent = String(event.total + pendingLikes);
      }
    },
  };
}

// --- the host console's moderation tools ---

function mountModeration(root, roomId) {
  const base = `/api/rooms/${roomId}`;
  const box = el("div", "chat-moderation");
  const title = el("h4", "chat-moderation-title");
  const menu = el("div", "chat-menu");
  menu.hidden = true;
  const who = el("span", "chat-menu-who");
  const del = el("button", "chat-delete");
  const mute = el("button", "chat-mute");
  const ban = el("button", "chat-ban");
  for (const button of [del, mute, ban]) button.type = "button";
  menu.append(who, del, mute, ban);

  const settingsForm = el("form", "chat-settings inline-form");
  const slowLabel = el("label", "chat-field");
  const slowText = el("span");
  const slow = el("input", "chat-slow");
  slow.type = "number";
  slow.min = "0";
  slow.max = "3600";
  slow.value = "0";
  slowLabel.append(slowText, slow);
  const wordsLabel = el("label", "chat-field");
  const wordsText = el("span");
  const words = el("input", "chat-words");
  wordsLabel.append(wordsText, words);
  const closedLabel = el("label", "chat-field chat-check");
  const closed = el("input", "chat-closed");
  closed.type = "checkbox";
  const closedText = el("span");
  closedLabel.append(closed, closedText);
  const save = el("button", "chat-save");
  save.type = "submit";
  settingsForm.append(slowLabel, wordsLabel, closedLabel, save);

  const pinForm = el("form", "chat-pin-form inline-form");
  const pinInput = el("input", "chat-pin-text");
  pinInput.maxLength = 200;
  const pin = el("button", "chat-pin");
  pin.type = "submit";
  const unpin = el("button", "chat-unpin");
  unpin.type = "button";
  pinForm.append(pinInput, pin, unpin);
  const note = el("p", "muted chat-moderation-note");
  box.append(title, menu, settingsForm, pinForm, note);
  root.append(box);

  let current = null;
  const done = (promise) =>
    promise.then(
      () => (note.textContent = chatText("done")),
      (err) => (note.textContent = String(err?.message || err)),
    );

  del.addEventListener("click", () => {
    if (current) done(request("DELETE", `${base}/chat/${current.id}`));
    menu.hidden = true;
  });
  mute.addEventListener("click", () => {
    if (current) done(request("POST", `${base}/mutes`, { body: { user_id: current.user.id, seconds: 300 } }));
    menu.hidden = true;
  });
  ban.addEventListener("click", () => {
    if (current) done(request("POST", `${base}/bans`, { body: { user_id: current.user.id } }));
    menu.hidden = true;
  });
  settingsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const blocked = words.value.split(/[,，]/).map((w) => w.trim()).filter(Boolean);
    done(
      request("PUT", `${base}/chat/settings`, {
        body: { slow_mode_s: Number(slow.value) || 0, blocked_words: blocked, closed: closed.checked },
      }),
    );
  });
  pinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (pinInput.value.trim()) done(request("POST", `${base}/chat/pin`, { body: { text: pinInput.value.trim() } }));
  });
  unpin.addEventListener("click", () => done(request("DELETE", `${base}/chat/pin`)));

  request("GET", `${base}/moderation`).then(
    (found) => {
      slow.value = String(found.settings.slow_mode_s);
      words.value = found.settings.blocked_words.join(", ");
      closed.checked = found.settings.closed;
    },
    () => {},
  );

  return {
    label() {
      title.textContent = chatText("moderation");
      del.textContent = chatText("delete");
      mute.textContent = chatText("mute");
      ban.textContent = chatText("ban");
      slowText.textContent = chatText("slowMode");
      wordsText.textContent = chatText("blockedWords");
      closedText.textContent = chatText("closeChat");
      save.textContent = chatText("save");
      pinInput.placeholder = chatText("pinText");
      pin.textContent = chatText("pin");
      unpin.textContent = chatText("unpin");
    },
    target(message, li) {
      current = message;
      who.textContent = `${message.user.name}: ${message.text}`;
      menu.hidden = false;
      li.classList.add("chat-selected");
    },
    pinned(notice) {
      if (notice) pinInput.value = notice.text;
    },
  };
}

// The two functions the panel needs, from the page's hub (web/static/js/live.js, the npm
// `centrifuge` SDK): subscribe on the page's one connection, and publish through that
// subscription (a refusal rejects with the protocol's `code`).
export function chatChannel(hub) {
  const subscriptions = new Map();
  return {
    subscribe: (channel, handlers) => {
      const sub = hub.subscribe(channel, handlers);
      subscriptions.set(channel, sub);
      return sub;
    },
    publish: (channel, data) => subscriptions.get(channel).publish(data),
  };
}
