// Payment instructions for an order: the payment link, its QR code and the wallet command.
import qrcode from "../vendor/qrcode.mjs";

// The portal's payment link format (also what the QR code holds):
//   iota:<ADDRESS>?amount=<iota>&tag=<TAG>
// ADDRESS is the 81-tryte deposit address, amount an integer number of iota, TAG the order's
// 27-tryte tag. Trytes are A-Z and 9, so nothing needs escaping.
export function paymentLink(order) {
  return `iota:${order.address}?amount=${order.amount_iota}&tag=${order.tag}`;
}

// The same payment with this project's wallet (`iot-wallet`, see wallet/__main__.py). The seed
// stays with the payer in a file of their own; the page never sees it.
export const SEED_FILE = "my.seed";

export function walletCommand(order, config) {
  return [
    "iot-wallet pay",
    `--node ${config.iota_node_url}`,
    `--seed-file ${SEED_FILE}`,
    `--address ${order.address}`,
    `--tag ${order.tag}`,
    `--amount ${order.amount_iota}`,
    // The node's proof-of-work weight, when it is not pyota's default (the devnet's Hornet).
    ...(config.iota_mwm ? [`--mwm ${config.iota_mwm}`] : []),
  ].join(" ");
}

export function drawQr(canvas, text) {
  const qr = qrcode(0, "M");
  qr.addData(text);
  qr.make();
  const modules = qr.getModuleCount();
  const quiet = 4;
  const size = canvas.width;
  const cell = Math.max(1, Math.floor(size / (modules + 2 * quiet)));
  const offset = Math.floor((size - cell * modules) / 2);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.fillStyle = "#000";
  for (let r = 0; r < modules; r++) {
    for (let c = 0; c < modules; c++) {
      if (qr.isDark(r, c)) ctx.fillRect(offset + c * cell, offset + r * cell, cell, cell);
    }
  }
}
