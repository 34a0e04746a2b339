// The buyer's next step after POST /api/orders/{id}/pay, by the provider's flow
// (docs/payments.md): "none" (dev mode's simulated provider settled it already),
// "wechat_jsapi" (inside WeChat: WeixinJSBridge with the signed parameters), "wechat_h5"
// (another browser: go to WeChat Pay's h5_url), "stripe" (Stripe.js confirms the PaymentIntent;
// js.stripe.com is loaded only then). Each resolves once the buyer is done at the provider;
// the order itself turns paid only when the provider's notification reaches the server.

// Inside WeChat, the page may be opened with the buyer's openid (from the merchant's WeChat
// sign-in); the server then starts a JSAPI payment instead of an H5 one.
export function payBody() {
  const openid = new URLSearchParams(location.search).get("openid");
  return openid && /MicroMessenger/i.test(navigator.userAgent) ? { openid } : undefined;
}

function weixinBridge() {
  if (window.WeixinJSBridge) return Promise.resolve(window.WeixinJSBridge);
  return new Promise((resolve) =>
    document.addEventListener("WeixinJSBridgeReady", () => resolve(window.WeixinJSBridge), {
      once: true,
    }),
  );
}

async function payInWeChat(params) {
  const bridge = await weixinBridge();
  const result = await new Promise((resolve) =>
    bridge.invoke("getBrandWCPayRequest", params, resolve),
  );
  if (result.err_msg !== "get_brand_wcpay_request:ok") throw new Error(result.err_msg);
}

function loadStripe() {
  if (window.Stripe) return Promise.resolve(window.Stripe);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "https://js.stripe.com/v3/";
    script.onload = () => resolve(window.Stripe);
    script.onerror = () => reject(new Error("Stripe.js did not load"));
    document.head.appendChild(script);
  });
}

async function payWithStripe(started, anchor) {
  const stripe = (await loadStripe())(started.publishable_key);
  const elements = stripe.elements({ clientSecret: started.client_secret });
  const box = document.createElement("form");
  box.id = "stripe-payment";
  const confirm = document.createElement("button");
  confirm.type = "submit";
  confirm.className = "btn btn-primary";
  confirm.textContent = anchor.textContent;
  const slot = document.createElement("div");
  box.append(slot, confirm);
  anchor.after(box);
  elements.create("payment").mount(slot);
  try {
    await new Promise((resolve, reject) =>
      box.addEventListener("submit", async (event) => {
        event.preventDefault();
        confirm.disabled = true;
        const { error } = await stripe.confirmPayment({ elements, redirect: "if_required" });
        if (error) {
          confirm.disabled = false;
          reject(new Error(error.message));
        } else resolve();
      }),
    );
  } finally {
    box.remove();
  }
}

// Follows `started.flow`; false when the page is leaving (H5 redirect).
export async function followPayFlow(started, anchor) {
  switch (started && started.flow) {
    case "wechat_jsapi":
      await payInWeChat(started.wechat_jsapi);
      return true;
    case "wechat_h5":
      location.assign(started.h5_url);
      return false;
    case "stripe":
      await payWithStripe(started, anchor);
      return true;
    default:
      return true;
  }
}
