// Text that comes from the far side (broker, device, tunnel: RPC error messages, a
// CloseTunnel's {"error": …}, a close reason) and that the page shows, above all in the
// terminal: it must not be able to drive the terminal (change the title, switch
// screens, move the cursor, answer queries, …). The shell's real output never goes
// through here.

/** Longest message shown (in UTF-16 units, the ellipsis included). */
export const MAX_MESSAGE = 500;
/** Input beyond this is not even looked at (the cap above applies anyway). */
const MAX_SCAN = 8 * 1024;

// Escape sequences, in their 7-bit (ESC …) and 8-bit (C1) forms. Every class is negated
// or bounded, so the scan stays linear; an unterminated sequence runs to the end.
const SEQUENCE = new RegExp([
  // Control strings (OSC, DCS, SOS, PM, APC) up to BEL or ST (ESC \ or 0x9C).
  '(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d-\\x9f])[^\\x07\\x1b\\x9c]*(?:\\x07|\\x9c|\\x1b\\\\)?',
  // CSI: parameter bytes, intermediate bytes, the final byte.
  '(?:\\x1b\\[|\\x9b)[\\x30-\\x3f]*[\\x20-\\x2f]*[\\x40-\\x7e]?',
  // Any other escape: intermediate bytes, the final byte.
  '\\x1b[\\x20-\\x2f]*[\\x30-\\x7e]?',
].join('|'), 'g');
const LINE_BREAKS = /[\t\n\v\f\r\x85\u2028\u2029]+/g;
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;

/**
 * `text` as one printable line: escape sequences removed, then every remaining C0, DEL
 * and C1 control character (line breaks and tabs become a space), at most `max` long.
 */
export function printable(text, max = MAX_MESSAGE) {
  let s = String(text ?? '');
  let cut = false;
  if (s.length > MAX_SCAN) { s = s.slice(0, MAX_SCAN); cut = true; }
  s = s.replace(SEQUENCE, '').replace(LINE_BREAKS, ' ').replace(CONTROLS, '').trim();
  if (s.length > max || cut) {
    let end = Math.max(0, Math.min(s.length, max - 1));
    // Do not leave half of a surrogate pair.
    if (end > 0 && /[\ud800-\udbff]/.test(s[end - 1])) end--;
    s = `${s.slice(0, end)}…`;
  }
  return s;
}
