// Reference for `autoneg tags step|aspect`: the behaviour of 6DammK9/nai-anime-pure-negative-prompt's
// ch97/step.js and ch97/aspect512.js as described in ../shared/reference/seed-repos.md, restated in
// JavaScript so node supplies the real parseFloat, Number(), localeCompare and number-to-text rules.
// Run: node tests/ref/step_ref.js > tests/ref/step_cases.txt
// Output lines: "step<TAB>ratio<TAB>each<TAB>input (JSON)<TAB>result" and "aspect<TAB>w<TAB>h<TAB>W H".
function toPlainString(num) {
  const s = String(num);
  if (!/e/i.test(s)) return s;
  const [mant, expS] = s.split(/e/i);
  const exp = parseInt(expS, 10);
  const neg = mant[0] === '-';
  const m = neg ? mant.slice(1) : mant;
  const [ip, fp = ''] = m.split('.');
  const digits = ip + fp;
  let point = ip.length + exp;
  let out;
  if (point <= 0) out = '0.' + '0'.repeat(-point) + digits;
  else if (point >= digits.length) out = digits + '0'.repeat(point - digits.length);
  else out = digits.slice(0, point) + '.' + digits.slice(point);
  return (neg ? '-' : '') + out;
}
function step(prompts, arg2, full) {
  const stepv = isNaN(parseFloat(arg2)) ? 1.0 : parseFloat(arg2);
  let tags = [];
  for (const p of prompts)
    for (let t of p.split(', ')) {
      t = t.trim().replace('\r\n', '').replace('\n', '').replace(',', '').trim();
      tags.push(t);
    }
  tags = tags.filter((t, i) => tags.indexOf(t) === i).sort((a, b) => a.localeCompare(b));
  const k = Math.abs(stepv);
  const wrap = (s) => {
    if (stepv < 0) return ''.padStart(k, '[') + s + ''.padStart(k, ']');
    if (stepv > 1 && Number.isInteger(stepv)) return ''.padStart(stepv, '{') + s + ''.padStart(stepv, '}');
    return '(' + s + ':' + toPlainString(stepv) + ')';
  };
  return full ? tags.map(wrap).join(', ') : wrap(tags.join(', '));
}
function aspect(a1, a2) {
  a1 = a1 || 1; a2 = a2 || 1;
  const ar = a1 / a2, A = 512 * 512;
  const x = Math.sqrt(4 * ar * A) / (2 * ar);
  return [Math.floor(ar * x), Math.floor(x)];
}
const base = ['bad, comic, cropped, error, extra, worst, lowres, speech, low'];
const lists = [
  base,
  ['Zebra, apple, Apple, _under, -dash, 9lives, 10lives, a b, ab, a_b, a-b, aB, Ab, (paren), [sq], {br}'],
  ['x, y,z, x , \n q, r\r\n, , w', 'y, extra tag, Worst, worst'],
  ['lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, ' +
   'worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry'],
];
const ratios = [undefined, '0.9', '0', '-2', '-1.7', '3', '2.0', '1.5', '0.0000001', 'abc', '-0.5', '1e-7',
  '1.', '.5', ' 2.5x', '1', '12', '-0', '123456789.125', '1e-10', '0.1', '-3.99'];
for (const l of lists)
  for (const r of ratios)
    for (const each of [false, true])
      console.log(['step', r === undefined ? '' : r, each ? 1 : 0, JSON.stringify(l), step(l, r, each)].join('\t'));
const aspects = [[undefined, undefined], ['1', '1'], ['4', '3'], ['3', '4'], ['16', '9'], ['9', '16'], ['3', '2'],
  ['1.5', '1'], ['21', '9'], ['1', '4'], ['2', '3'], ['7', '5'], ['0x10', '9'], [' 5 ', '4'], ['1e1', '3']];
for (const [a, b] of aspects) console.log(['aspect', a || '', b || '', aspect(a, b).join(' ')].join('\t'));
