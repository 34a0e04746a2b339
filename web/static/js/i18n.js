// UI text in Chinese and English. Chinese is the default when the browser prefers it; the
// switch in every page's header is remembered in localStorage.

const STRINGS = {
  en: {
    "lang.switch": "中文",
    "hub.live": "Live",
    "hub.reconnecting": "Reconnecting…",
    "hub.offline": "Offline",
    "hub.failed": "Disconnected",
    "room.status.scheduled": "Not live yet",
    "room.status.live": "LIVE",
    "room.status.ended": "Ended",
    "room.viewers": "{n} watching",
    "room.loading": "Loading the room…",
    "room.notFound": "This room does not exist.",
    "room.ended": "This live stream has ended. Thanks for watching!",
    "room.waiting": "The host has not pinned a product yet. Stay tuned!",
    "room.pinned": "Now showing",
    "common.signIn": "Sign in",
    "common.signOut": "Sign out",
    "common.signedInAs": "Signed in as {name}",
    "common.devSignIn": "Continue as a test viewer",
    "common.devOnly": "Sign in through the livesell app to buy.",
    "common.name": "Your name",
    "common.copy": "Copy",
    "common.copied": "Copied",
    "common.copyFailed": "Could not copy; select the link and copy it by hand",
    "common.close": "Close",
    "common.retry": "Retry",
    "common.none": "Nothing yet",
    "drop.flash": "Flash price",
    "drop.startsIn": "Starts in {t}",
    "drop.endsIn": "Ends in {t}",
    "drop.soldOut": "Sold out",
    "drop.closed": "Drop closed",
    "drop.ended": "Drop ended",
    "drop.left": "{n} left of {q}",
    "drop.limit": "Limit {n} per person",
    "drop.none": "No drop right now",
    "buy.button": "Buy now",
    "buy.buying": "Placing order…",
    "buy.soon": "Starts soon",
    "buy.quantity": "Quantity",
    "buy.held": "Reserved for you! Pay within {t}",
    "buy.ok": "Order placed: your items are reserved",
    "order.title": "Your order",
    "order.amount": "Amount",
    "order.status.held": "Reserved, waiting for payment",
    "order.status.paying": "Paying…",
    "order.status.paid": "Paid — thank you!",
    "order.status.delivered": "Delivered",
    "order.status.expired": "Reservation expired",
    "order.status.refunded": "Refunded",
    "order.pay": "Pay {amount}",
    "order.payPending": "Waiting for the payment to be confirmed…",
    "order.dismiss": "Hide",
    "ticker.title": "Just bought",
    "ticker.bought": "{who} bought {n} × {what}",
    "ticker.someone": "Someone",
    "host.title": "Host console",
    "host.goLive": "Go live",
    "host.end": "End stream",
    "host.endConfirm": "End this live stream? Viewers will see it has ended.",
    "host.products": "Products",
    "host.pin": "Pin",
    "host.unpin": "Unpin",
    "host.pinnedNow": "Pinned",
    "host.noProducts": "No products yet: add one below.",
    "host.addProduct": "New product",
    "host.addExisting": "Add an existing product by id",
    "host.productId": "Product id",
    "host.add": "Add",
    "host.sku": "SKU",
    "host.productTitle": "Title",
    "host.price": "Price (¥)",
    "host.commission": "Commission (%)",
    "host.create": "Create product",
    "host.startDrop": "Start a drop",
    "host.product": "Product",
    "host.dropPrice": "Flash price (¥)",
    "host.quantity": "Quantity",
    "host.perBuyer": "Limit per buyer",
    "host.startDelay": "Starts in (s)",
    "host.duration": "Duration (s)",
    "host.start": "Start drop",
    "host.currentDrop": "Current drop",
    "host.closeDrop": "Close drop",
    "host.sold": "Sold",
    "host.held": "Held",
    "host.remaining": "Left",
    "host.orders": "Orders",
    "host.ordersWaiting": "Paid orders appear here as they come in",
    "host.leaderboard": "Distributor leaderboard",
    "host.viewerLink": "Viewer page",
    "host.notHost": "Only this room's host can use this console.",
    "host.signInHost": "Sign in as the host (test)",
    "host.dropStarted": "Drop started",
    "host.productCreated": "Product created",
    "lb.rank": "#",
    "lb.distributor": "Distributor",
    "lb.team": "Team",
    "lb.gmv": "GMV",
    "lb.orders": "Orders",
    "lb.teams": "Teams",
    "lb.empty": "No sales through distributors yet",
    "dist.title": "Distributor",
    "dist.become": "Become a distributor",
    "dist.becomeText": "Share live rooms with friends and earn commission on what they buy.",
    "dist.team": "Team (optional)",
    "dist.join": "Join",
    "dist.welcome": "Welcome! You are now a distributor.",
    "dist.stats": "Your numbers",
    "dist.clicks": "Clicks",
    "dist.visitors": "Visitors",
    "dist.buyers": "Buyers",
    "dist.orders": "Orders",
    "dist.gmv": "Sales (GMV)",
    "dist.commission": "Commission",
    "dist.pending": "Pending",
    "dist.confirmed": "Confirmed",
    "dist.paid": "Paid out",
    "dist.reversed": "Reversed",
    "dist.balance": "Balance",
    "dist.pendingHelp": "Held until the 7-day return window has passed",
    "dist.links": "Share a live room",
    "dist.roomId": "Room id",
    "dist.createLink": "Create link",
    "dist.scan": "Scan to open the live room",
    "dist.rank": "Your rank in room {room}",
    "dist.rankValue": "#{rank} of {of}",
    "dist.unranked": "Not ranked yet",
    "dist.activity": "Live activity",
    "dist.ev.click": "Someone opened your link {code}",
    "dist.ev.pending": "New order {amount}: commission {commission} pending",
    "dist.ev.selfReferral": "Order {amount} through your own link: no commission",
    "dist.ev.confirmed": "Commission {commission} confirmed",
    "dist.ev.reversed": "Refund: commission {commission} reversed",
    "dist.payouts": "Payout history",
    "dist.noPayouts": "No payouts yet",
    "dist.payoutsMissing": "Payout history is not available on this server.",
    "dist.signIn": "Sign in as a distributor (test)",
    "notfound.title": "Page not found",
    "error.network": "Cannot reach livesell. Check your connection and try again.",
    "error.sold_out": "Sold out — everything has been claimed.",
    "error.drop_not_active": "This drop is not open for orders right now.",
    "error.drop_not_started": "This drop has not started yet.",
    "error.drop_ended": "This drop has ended.",
    "error.limit_reached": "You have reached the per-person limit for this drop.",
    "error.rate_limited": "Too many attempts. Please wait a moment.",
    "error.unauthorized": "Please sign in again.",
    "error.forbidden": "You are not allowed to do that.",
    "error.not_found": "Not found.",
    "error.conflict": "That cannot be done right now.",
    "error.unprocessable": "Some of the details are not valid: {message}",
    "error.bad_request": "The request was not understood.",
    "error.unavailable": "livesell is busy or restarting. Please retry in a moment.",
    "error.hold_expired": "Your reservation has expired.",
    "error.order_not_payable": "This order can no longer be paid.",
    "error.room_ended": "This live stream has ended.",
    "error.room_not_live": "The room is not live.",
    "error.not_a_distributor": "You are not a distributor yet.",
    "error.idempotency_mismatch": "That order request changed; please tap again.",
    "error.sku_taken": "A product with this SKU already exists.",
    "error.unknown_product": "There is no such product.",
    "error.product_not_found": "There is no such product.",
    "error.room_not_found": "There is no such room.",
    "error.drop_in_progress": "A drop is already running in this room. Close it first.",
    "error.idempotency_key_required": "The order request was incomplete; please tap again.",
    "error.idempotency_in_progress": "Your order is still being placed…",
    "error.order_state": "This order cannot do that in its current state.",
    "error.order_not_found": "There is no such order.",
    "error.payments_unavailable": "Payments are unavailable right now. Please retry in a moment.",
    "error.return_window_closed": "The return window for this order has closed.",
    "error.link_not_found": "This share link is not valid.",
    "error.link_room_mismatch": "This share link belongs to another room.",
    "error.click_rate_limited": "Too many visits through this link. Please wait a moment.",
    "error.distributor_not_found": "There is no such distributor.",
    "error.internal": "Something went wrong on our side. Please try again.",
    "error.generic": "Something went wrong: {message}",
  },
  zh: {
    "lang.switch": "English",
    "hub.live": "实时",
    "hub.reconnecting": "重新连接中…",
    "hub.offline": "离线",
    "hub.failed": "连接已断开",
    "room.status.scheduled": "未开播",
    "room.status.live": "直播中",
    "room.status.ended": "已结束",
    "room.viewers": "{n} 人在看",
    "room.loading": "正在进入直播间…",
    "room.notFound": "直播间不存在。",
    "room.ended": "本场直播已结束，感谢观看！",
    "room.waiting": "主播还没有上架商品，敬请期待！",
    "room.pinned": "正在讲解",
    "common.signIn": "登录",
    "common.signOut": "退出登录",
    "common.signedInAs": "已登录：{name}",
    "common.devSignIn": "以测试观众身份进入",
    "common.devOnly": "请在 livesell 应用中登录后购买。",
    "common.name": "你的名字",
    "common.copy": "复制",
    "common.copied": "已复制",
    "common.copyFailed": "复制失败，请手动选中链接复制",
    "common.close": "关闭",
    "common.retry": "重试",
    "common.none": "暂无",
    "drop.flash": "秒杀价",
    "drop.startsIn": "{t} 后开抢",
    "drop.endsIn": "距结束 {t}",
    "drop.soldOut": "已抢光",
    "drop.closed": "秒杀已关闭",
    "drop.ended": "秒杀已结束",
    "drop.left": "剩余 {n} / {q} 件",
    "drop.limit": "每人限购 {n} 件",
    "drop.none": "暂无秒杀",
    "buy.button": "立即抢购",
    "buy.buying": "下单中…",
    "buy.soon": "即将开抢",
    "buy.quantity": "数量",
    "buy.held": "已为你锁定库存！请在 {t} 内付款",
    "buy.ok": "下单成功，库存已为你保留",
    "order.title": "我的订单",
    "order.amount": "金额",
    "order.status.held": "已锁定，待付款",
    "order.status.paying": "付款中…",
    "order.status.paid": "已付款，感谢购买！",
    "order.status.delivered": "已发货",
    "order.status.expired": "锁定已过期",
    "order.status.refunded": "已退款",
    "order.pay": "付款 {amount}",
    "order.payPending": "正在确认付款结果…",
    "order.dismiss": "收起",
    "ticker.title": "刚刚下单",
    "ticker.bought": "{who} 买了 {n} 件 {what}",
    "ticker.someone": "有人",
    "host.title": "主播控制台",
    "host.goLive": "开始直播",
    "host.end": "结束直播",
    "host.endConfirm": "确定结束本场直播吗？观众将看到直播已结束。",
    "host.products": "商品",
    "host.pin": "上架讲解",
    "host.unpin": "取消讲解",
    "host.pinnedNow": "讲解中",
    "host.noProducts": "还没有商品，请在下方添加。",
    "host.addProduct": "新建商品",
    "host.addExisting": "按编号添加已有商品",
    "host.productId": "商品编号",
    "host.add": "添加",
    "host.sku": "货号",
    "host.productTitle": "商品名称",
    "host.price": "价格（元）",
    "host.commission": "佣金比例（%）",
    "host.create": "创建商品",
    "host.startDrop": "发起秒杀",
    "host.product": "商品",
    "host.dropPrice": "秒杀价（元）",
    "host.quantity": "数量",
    "host.perBuyer": "每人限购",
    "host.startDelay": "开始倒计时（秒）",
    "host.duration": "持续时间（秒）",
    "host.start": "开始秒杀",
    "host.currentDrop": "当前秒杀",
    "host.closeDrop": "提前结束",
    "host.sold": "已售",
    "host.held": "锁定中",
    "host.remaining": "剩余",
    "host.orders": "订单",
    "host.ordersWaiting": "新的付款订单会实时显示在这里",
    "host.leaderboard": "分销排行榜",
    "host.viewerLink": "观众页面",
    "host.notHost": "只有本直播间的主播可以使用控制台。",
    "host.signInHost": "以主播身份登录（测试）",
    "host.dropStarted": "秒杀已发起",
    "host.productCreated": "商品已创建",
    "lb.rank": "名次",
    "lb.distributor": "分销员",
    "lb.team": "团队",
    "lb.gmv": "成交额",
    "lb.orders": "订单",
    "lb.teams": "团队",
    "lb.empty": "还没有分销成交",
    "dist.title": "分销中心",
    "dist.become": "成为分销员",
    "dist.becomeText": "把直播间分享给朋友，他们下单你就能获得佣金。",
    "dist.team": "团队（可选）",
    "dist.join": "加入",
    "dist.welcome": "欢迎！你已成为分销员。",
    "dist.stats": "我的数据",
    "dist.clicks": "点击",
    "dist.visitors": "访客",
    "dist.buyers": "买家",
    "dist.orders": "订单",
    "dist.gmv": "成交额",
    "dist.commission": "佣金",
    "dist.pending": "待结算",
    "dist.confirmed": "已确认",
    "dist.paid": "已打款",
    "dist.reversed": "已冲回",
    "dist.balance": "可提现余额",
    "dist.pendingHelp": "七天无理由退货期满后结算",
    "dist.links": "分享直播间",
    "dist.roomId": "直播间编号",
    "dist.createLink": "生成链接",
    "dist.scan": "扫码进入直播间",
    "dist.rank": "直播间 {room} 排名",
    "dist.rankValue": "第 {rank} 名（共 {of} 人）",
    "dist.unranked": "暂未上榜",
    "dist.activity": "实时动态",
    "dist.ev.click": "有人打开了你的链接 {code}",
    "dist.ev.pending": "新订单 {amount}：佣金 {commission} 待结算",
    "dist.ev.selfReferral": "通过自己的链接下单 {amount}：不计佣金",
    "dist.ev.confirmed": "佣金 {commission} 已确认",
    "dist.ev.reversed": "退款：佣金 {commission} 已冲回",
    "dist.payouts": "打款记录",
    "dist.noPayouts": "暂无打款",
    "dist.payoutsMissing": "此服务器暂不提供打款记录。",
    "dist.signIn": "以分销员身份登录（测试）",
    "notfound.title": "页面不存在",
    "error.network": "无法连接 livesell，请检查网络后重试。",
    "error.sold_out": "已抢光，库存已被抢完。",
    "error.drop_not_active": "当前秒杀未开放下单。",
    "error.drop_not_started": "秒杀还没开始。",
    "error.drop_ended": "秒杀已结束。",
    "error.limit_reached": "已达到本场秒杀的每人限购数量。",
    "error.rate_limited": "操作太频繁，请稍后再试。",
    "error.unauthorized": "请重新登录。",
    "error.forbidden": "你没有权限进行此操作。",
    "error.not_found": "找不到对应内容。",
    "error.conflict": "当前状态下无法进行此操作。",
    "error.unprocessable": "填写的信息有误：{message}",
    "error.bad_request": "请求格式有误。",
    "error.unavailable": "服务繁忙或正在重启，请稍后重试。",
    "error.hold_expired": "库存锁定已过期。",
    "error.order_not_payable": "该订单已无法付款。",
    "error.room_ended": "本场直播已结束。",
    "error.room_not_live": "直播间未开播。",
    "error.not_a_distributor": "你还不是分销员。",
    "error.idempotency_mismatch": "下单请求已变化，请重新点击。",
    "error.sku_taken": "该货号的商品已存在。",
    "error.unknown_product": "商品不存在。",
    "error.product_not_found": "商品不存在。",
    "error.room_not_found": "直播间不存在。",
    "error.drop_in_progress": "本直播间已有进行中的秒杀，请先结束。",
    "error.idempotency_key_required": "下单请求不完整，请重新点击。",
    "error.idempotency_in_progress": "订单正在提交中…",
    "error.order_state": "订单当前状态下无法进行此操作。",
    "error.order_not_found": "订单不存在。",
    "error.payments_unavailable": "支付暂时不可用，请稍后重试。",
    "error.return_window_closed": "该订单已过退货期限。",
    "error.link_not_found": "分享链接无效。",
    "error.link_room_mismatch": "该分享链接属于其他直播间。",
    "error.click_rate_limited": "通过该链接的访问过于频繁，请稍后再试。",
    "error.distributor_not_found": "分销员不存在。",
    "error.internal": "服务出了点问题，请重试。",
    "error.generic": "出错了：{message}",
  },
};

const STORAGE_KEY = "livesell.lang";
const listeners = new Set();
let current = null;

export function preferredLang(stored, languages) {
  if (stored === "zh" || stored === "en") return stored;
  const first = (languages && languages[0]) || "";
  return first.toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function lang() {
  if (current === null) {
    let stored = null;
    try {
      stored = localStorage.getItem(STORAGE_KEY);
    } catch {
      stored = null;
    }
    current = preferredLang(stored, navigator.languages || [navigator.language]);
  }
  return current;
}

export function setLang(value) {
  current = value === "zh" ? "zh" : "en";
  try {
    localStorage.setItem(STORAGE_KEY, current);
  } catch {
    // private mode: the choice lasts for this page only
  }
  applyI18n();
  for (const listener of listeners) listener(current);
}

export function onLangChange(listener) {
  listeners.add(listener);
}

export function t(key, vars = {}) {
  const table = STRINGS[lang()];
  const template = table[key] ?? STRINGS.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : ""));
}

export function has(key) {
  return key in STRINGS.en;
}

// Friendly text for an ApiError (or any error): known codes get their own sentence.
export function errorText(err) {
  const code = err && err.code ? String(err.code) : "";
  const message = err && err.message ? String(err.message) : "";
  if (code && has(`error.${code}`)) return t(`error.${code}`, { message });
  if (err && err.status >= 500) return t("error.internal");
  return t("error.generic", { message: message || code || "?" });
}

export function applyI18n(root = document) {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll("[data-i18n-title]")) {
    node.title = t(node.dataset.i18nTitle);
  }
  const toggle = root.querySelector("#lang-switch");
  if (toggle) toggle.textContent = t("lang.switch");
}

export function installLangSwitch() {
  const toggle = document.querySelector("#lang-switch");
  if (toggle) toggle.addEventListener("click", () => setLang(lang() === "zh" ? "en" : "zh"));
  applyI18n();
}

export const LANGS = Object.keys(STRINGS);
export const KEYS = Object.keys(STRINGS.en);
export const ZH_KEYS = Object.keys(STRINGS.zh);
