// Regenerates searchable_text.json with Mastodon's own code path: the
// searchable content built as streaming/index.js builds it, and JSDOM's
// text content. Run: npm install jsdom && node tests/golden/searchable_text.js
const fs = require('fs');
const path = require('path');
const { JSDOM } = require('jsdom');

const root = path.join(__dirname, '..', '..');
const searchable = (status) =>
  [status.spoiler_text || '', status.content]
    .concat(status.poll && status.poll.options ? status.poll.options.map((o) => o.title) : [])
    .concat(status.media_attachments.map((a) => a.description))
    .join('\n\n')
    .replace(/<br\s*\/?>/g, '\n')
    .replace(/<\/p><p>/g, '\n\n');

const cases = [];
const dir = path.join(root, 'corpus', 'mastodon');
for (const name of fs.readdirSync(dir).sort()) {
  const event = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
  if (event.event !== 'update' && event.event !== 'status.update') continue;
  const status = typeof event.payload === 'string' ? JSON.parse(event.payload) : event.payload;
  cases.push({ name, status: JSON.stringify(status), text: JSDOM.fragment(searchable(status)).textContent });
}
const handwritten = JSON.parse(fs.readFileSync(path.join(__dirname, 'handwritten_statuses.json'), 'utf8'));
for (const { name, status } of handwritten) {
  cases.push({ name, status: JSON.stringify(status), text: JSDOM.fragment(searchable(status)).textContent });
}
fs.writeFileSync(path.join(__dirname, 'searchable_text.json'), JSON.stringify(cases, null, 1) + '\n');
