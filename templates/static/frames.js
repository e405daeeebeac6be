// The DSF1 frame header (see dreamstream_actors::frame): 32 bytes before the JPEG.
(function () {
  const HEADER_LEN = 32;
  const MAGIC = [0x44, 0x53, 0x46, 0x31]; // "DSF1"
  function encode(seq, capturedMs, jpeg) {
    const out = new Uint8Array(HEADER_LEN + jpeg.byteLength);
    const v = new DataView(out.buffer);
    MAGIC.forEach((b, i) => v.setUint8(i, b));
    v.setUint16(4, HEADER_LEN, true);
    v.setBigUint64(8, BigInt(seq), true);
    v.setBigUint64(16, BigInt(Math.floor(capturedMs)), true);
    out.set(new Uint8Array(jpeg), HEADER_LEN);
    return out.buffer;
  }
  function decode(buf) {
    const v = new DataView(buf);
    if (buf.byteLength < 8 || !MAGIC.every((b, i) => v.getUint8(i) === b)) {
      return { seq: 0, capturedMs: 0, processUs: 0, latencyUs: 0, jpeg: buf };
    }
    const len = v.getUint16(4, true);
    return {
      seq: Number(v.getBigUint64(8, true)),
      capturedMs: Number(v.getBigUint64(16, true)),
      processUs: v.getUint32(24, true),
      latencyUs: v.getUint32(28, true),
      jpeg: buf.slice(len),
    };
  }
  // Shows JPEG bytes in an <img>, releasing the previous object URL.
  function show(img, jpeg) {
    const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const old = img.dataset.url;
    img.src = url;
    img.dataset.url = url;
    if (old) URL.revokeObjectURL(old);
  }
  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }
  window.DSF = { HEADER_LEN, encode, decode, show, wsUrl };
})();
