/**
 * Small DOM helpers. The page's Content-Security-Policy allows no inline scripts or style attributes, so
 * everything here builds elements with `textContent` and classes — never `innerHTML` with a notification's
 * text, which comes from producers and must stay text.
 */

const SVG = 'http://www.w3.org/2000/svg';

/** The page's element with this id; the page is broken without it, so a missing one throws at start. */
export function byId<T extends HTMLElement>(id: string, kind: new () => T): T {
  const element = document.getElementById(id);
  if (!(element instanceof kind)) throw new Error(`inbox: #${id} is missing or not a ${kind.name}`);
  return element;
}

export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const created = document.createElement(tag);
  if (className !== undefined) created.className = className;
  if (text !== undefined) created.textContent = text;
  return created;
}

/** An icon from the sprite in index.html (`<symbol id="icon-…">`), hidden from assistive technology. */
export function icon(name: string): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG, 'use');
  use.setAttribute('href', `#icon-${name}`);
  svg.append(use);
  return svg;
}

/** Text only screen readers read (the `.sr-only` class clips it out of view). */
export function srOnly(text: string): HTMLSpanElement {
  return element('span', 'sr-only', text);
}

/** Whether focus is inside `container`, so removing it would drop focus onto the page's body. */
export function holdsFocus(container: Element): boolean {
  return document.activeElement !== null && container.contains(document.activeElement);
}

/** A message for any thrown value. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
