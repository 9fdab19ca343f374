// Payment instructions for an order: the payment link, its QR code and the wallet command.
import qrcode from "../vendor/qrcode.mjs";

// The portal's payment link format (also what the QR code holds):
//   iota:<ADDRESS>?amount=<iota>&tag=<TAG>
// ADDRESS is the 81-tryte deposit address, amount an integer number of iota, TAG the order's
// 27-tryte tag. Trytes are A-Z and 9, so nothing needs escaping.
export function paymentLink(order) {
  return `iota:${order.address}?amount=${order.amount_iota}&tag=${order.tag}`;
}

// The CLI equivalent with this project's wallet. The seed stays with the payer: it is read
// from the IOTA_SEED environment variable, never typed into the page.
export function walletCommand(order, config) {
  return [
    "iot-wallet pay",
    `--node ${config.iota_node_url}`,
    '--seed "$IOTA_SEED"',
    `--address ${order.address}`,
    `--tag ${order.tag}`,
    `--amount ${order.amount_iota}`,
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
