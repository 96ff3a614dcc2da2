// DOM helpers. Every piece of text from the service goes in as a text node:
// nothing here parses HTML, and there is no inline style (the page's
// Content-Security-Policy refuses both); widths go through the CSSOM.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, props, children) {
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'style') throw new Error('no style attributes: use a class or el.style');
      if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** An HTML element: h('td', {class: 'x'}, 'text', otherNode, [more]). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, same signature. */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Appends children: nodes, strings and numbers (as text), arrays; skips null. */
export function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

/** Empties an element and fills it with children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** An element whose width is a percentage, set through the CSSOM. */
export function widthPercent(el, percent) {
  el.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return el;
}

/**
 * Makes `target` look like `fresh` (same tag), changing only what differs,
 * so that polling keeps focus, selection and scroll position. Listeners are
 * not carried over: parts rendered this way use delegated `data-action`
 * handlers.
 */
export function morph(target, fresh) {
  for (const a of [...target.attributes]) {
    if (a.name !== 'style' && !fresh.hasAttribute(a.name)) target.removeAttribute(a.name);
  }
  for (const a of fresh.attributes) {
    if (a.name === 'style') continue;
    if (target.getAttribute(a.name) !== a.value) target.setAttribute(a.name, a.value);
  }
  if (target.style.cssText !== fresh.style.cssText) target.style.cssText = fresh.style.cssText;
  const news = [...fresh.childNodes];
  const olds = target.childNodes;
  for (let i = 0; i < news.length; i++) {
    const n = news[i];
    const o = olds[i];
    if (!o) {
      target.appendChild(n);
    } else if (o.nodeType === Node.TEXT_NODE && n.nodeType === Node.TEXT_NODE) {
      if (o.nodeValue !== n.nodeValue) o.nodeValue = n.nodeValue;
    } else if (
      o.nodeType === Node.ELEMENT_NODE &&
      n.nodeType === Node.ELEMENT_NODE &&
      o.namespaceURI === n.namespaceURI &&
      o.tagName === n.tagName &&
      o.getAttribute('data-key') === n.getAttribute('data-key')
    ) {
      morph(o, n);
    } else {
      target.replaceChild(n, o);
    }
  }
  while (olds.length > news.length) target.removeChild(target.lastChild);
}

/** Renders children into `el` by morphing (see `morph`). */
export function render(el, ...children) {
  const fresh = el.cloneNode(false);
  append(fresh, children);
  morph(el, fresh);
}
