"""The Slack stand-in's channel page: a channel as Slack would render it, for the demo and the browser test.

Plain server-rendered HTML from the stand-in's recorded messages (sandbox/slack.py): the channels and direct
messages on the left, the selected channel's messages with their Block Kit rendered (header, section text and
fields, context, divider, image, actions with buttons and their ``confirm`` dialogs), "(edited)" on updated
messages, thread replies under their parent, ephemeral messages and response_url answers only for the user
they were sent to ("Only visible to you"). "You are" picks the demo user who sees the page and presses the
buttons; a button posts to ``/_standin/press``, the message box sends a slash command to
``/_standin/command``. A few lines of script open the confirm dialogs and refresh the page every 2 s.
Everything from a message is escaped: the page shows text, it never runs it.
"""

from __future__ import annotations

import html
import re
import time
import urllib.parse
from typing import Any

from sandbox.slack import CHANNEL_ID, SLACKBOT_USER_ID, channel_id, with_ids

REFRESH_MS = 2000

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.46 -apple-system, "Segoe UI", Lato, Helvetica, Arial, sans-serif; color: #1d1c1d;
  display: grid; grid-template-columns: 240px 1fr; height: 100vh; }
aside { background: #3f0e40; color: #cfc3cf; padding: 12px 0; overflow-y: auto; }
aside h1 { color: #fff; font-size: 18px; margin: 0 16px 12px; }
aside h2 { font-size: 13px; font-weight: 600; margin: 14px 16px 4px; }
aside a { display: block; color: #cfc3cf; text-decoration: none; padding: 2px 16px 2px 26px; }
aside a.current { background: #1164a3; color: #fff; }
main { display: flex; flex-direction: column; min-width: 0; height: 100vh; }
header { display: flex; justify-content: space-between; align-items: center; padding: 10px 20px;
  border-bottom: 1px solid #ddd; }
header h2 { margin: 0; font-size: 18px; }
#live { flex: 1; overflow-y: auto; padding: 8px 0; }
.presses { margin: 0 20px 8px; padding: 6px 10px; background: #f8f8f8; border-radius: 6px; font-size: 13px;
  list-style: none; }
.presses .failed { color: #e01e5a; }
.msg { display: flex; gap: 8px; padding: 6px 20px; }
.msg:hover { background: #f8f8f8; }
.avatar { width: 36px; height: 36px; border-radius: 4px; background: #2eb67d; color: #fff; font-weight: 700;
  display: flex; align-items: center; justify-content: center; flex: none; font-size: 13px; }
.body { min-width: 0; flex: 1; }
.meta time, .edited { color: #616061; font-size: 12px; }
.app { background: #e8e8e8; color: #616061; font-size: 10px; font-weight: 700; padding: 1px 3px;
  border-radius: 2px; }
.only-you { color: #616061; font-size: 12px; }
.ephemeral { background: #f4f9ff; }
.thread { margin: 4px 0 0 0; padding-left: 12px; border-left: 3px solid #ddd; }
.thread .msg { padding: 4px 0; }
.thread-count { color: #1264a3; font-size: 13px; font-weight: 700; }
.block { margin: 4px 0; }
.header { font-size: 18px; font-weight: 900; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; }
.section { display: flex; justify-content: space-between; gap: 12px; }
.context { color: #616061; font-size: 12px; display: flex; gap: 8px; flex-wrap: wrap; }
hr { border: 0; border-top: 1px solid #ddd; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; }
form.press { display: inline; margin: 0; }
.btn { font: inherit; font-size: 14px; font-weight: 700; padding: 3px 12px; border-radius: 4px; cursor: pointer;
  border: 1px solid #bbb; background: #fff; color: #1d1c1d; text-decoration: none; display: inline-block; }
.btn.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.btn.danger { background: #e01e5a; border-color: #e01e5a; color: #fff; }
.btn:disabled { opacity: .5; cursor: default; }
dialog { border: 0; border-radius: 8px; box-shadow: 0 4px 24px rgba(0,0,0,.3); width: 460px; padding: 20px; }
dialog h3 { margin: 0 0 12px; }
dialog .buttons { display: flex; justify-content: flex-end; gap: 8px; margin-top: 16px; }
code { background: #f6f6f6; border: 1px solid #ddd; border-radius: 3px; color: #e01e5a; padding: 0 3px;
  font-size: 12px; }
pre { background: #f6f6f6; border: 1px solid #ddd; border-radius: 4px; padding: 8px; white-space: pre-wrap;
  font-size: 12px; margin: 4px 0; }
.unsupported { color: #616061; font-style: italic; font-size: 12px; }
.composer { margin: 0 20px 16px; display: flex; gap: 8px; }
.composer input { flex: 1; font: inherit; padding: 8px 10px; border: 1px solid #bbb; border-radius: 6px; }
.empty { color: #616061; padding: 20px; }
"""

# Opens a confirm dialog; refreshes #channels and #live every 2 s unless a dialog is open or nothing changed.
SCRIPT = """
setInterval(async () => {
  if (document.querySelector("dialog[open]")) return;
  try {
    const answer = await fetch(location.href, {cache: "no-store"});
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const id of ["channels", "live"]) {
      const now = document.getElementById(id), next = fresh.getElementById(id);
      if (now && next && now.innerHTML !== next.innerHTML) now.replaceWith(next);
    }
  } catch (e) {}
}, %d);
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# -------------------------------------------------------------------------------------------- mrkdwn

_CONTROL = re.compile(r"<([^<>\n]+)>")
_STYLES = (
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), "b"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"), "i"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])"), "s"),
)


def _slack_unescape(text: str) -> str:
    # Slack's own escaping: apps send &amp; &lt; &gt; for the three characters it reserves.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _styled(text: str) -> str:
    out = esc(_slack_unescape(text))
    for pattern, tag in _STYLES:
        out = pattern.sub(rf"<{tag}>\1</{tag}>", out)
    return out.replace("\n", "<br>")


def _control(token: str, users: dict[str, dict[str, Any]]) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):
        user = users.get(target[1:], {})
        return f"<b>@{esc(label or user.get('name') or target[1:])}</b>"
    if target.startswith("#"):
        return f"<b>#{esc(label or target[1:])}</b>"
    if target.startswith("!"):
        return f"<b>@{esc(label or target[1:].split('^')[0])}</b>"
    url = _slack_unescape(target)
    if urllib.parse.urlsplit(url).scheme in ("http", "https", "mailto"):
        return f'<a href="{esc(url)}" target="_blank" rel="noopener">{_styled(label or target)}</a>'
    return esc(_slack_unescape(token))


def _inline(text: str, users: dict[str, dict[str, Any]]) -> str:
    out, last = [], 0
    for match in _CONTROL.finditer(text):
        out.append(_styled(text[last : match.start()]))
        out.append(_control(match.group(1), users))
        last = match.end()
    out.append(_styled(text[last:]))
    return "".join(out)


def mrkdwn(text: str, users: dict[str, dict[str, Any]] | None = None) -> str:
    """Slack's mrkdwn as HTML: ```code blocks```, `code`, *bold*, _italic_, ~strike~, <url|label> links and
    <@user> mentions; everything else escaped."""
    users = users or {}
    out = []
    for i, part in enumerate(text.split("```")):
        if i % 2:
            out.append(f"<pre>{esc(_slack_unescape(part.strip(chr(10))))}</pre>")
            continue
        for j, piece in enumerate(re.split(r"`([^`\n]+)`", part)):
            out.append(f"<code>{esc(_slack_unescape(piece))}</code>" if j % 2 else _inline(piece, users))
    return "".join(out)


def text_object(obj: Any, users: dict[str, dict[str, Any]]) -> str:
    if not isinstance(obj, dict):
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn(str(obj.get("text", "")), users)
    return esc(obj.get("text", "")).replace("\n", "<br>")


# ------------------------------------------------------------------------------------------- blocks


class _View:
    """What every part of one page needs: who is looking, which channel, the page's own address."""

    def __init__(self, *, back: str, as_user: str, users: dict[str, dict[str, Any]]) -> None:
        self.back, self.as_user, self.users = back, as_user, users

    def button(self, message: dict[str, Any], block: dict[str, Any], button: dict[str, Any]) -> str:
        label = esc(button.get("text", {}).get("text", ""))
        style = str(button.get("style") or "")
        css = f"btn {esc(style)}" if style in ("primary", "danger") else "btn"
        if button.get("url"):
            return f'<a class="{css}" href="{esc(button["url"])}" target="_blank" rel="noopener">{label}</a>'
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{esc(value)}">'
            for name, value in (
                ("user", self.as_user),
                ("channel", message["channel"]),
                ("ts", message["ts"]),
                ("block_id", block["block_id"]),
                ("action_id", button["action_id"]),
                ("back", self.back),
            )
        )
        disabled = "" if self.as_user else " disabled"
        action = f'data-action-id="{esc(button["action_id"])}"'
        confirm = button.get("confirm")
        if not isinstance(confirm, dict):
            return (
                f'<form class="press" method="post" action="/_standin/press">{hidden}'
                f'<button class="{css}" type="submit" {action}{disabled}>{label}</button></form>'
            )
        # Slack's confirm dialog: title, text, a confirm and a deny button; only confirming presses.
        confirm_style = "danger" if confirm.get("style") == "danger" or style == "danger" else "primary"
        return (
            f'<span class="press"><button class="{css}" type="button" {action}{disabled} '
            f'onclick="this.nextElementSibling.showModal()">{label}</button>'
            f'<dialog><form method="post" action="/_standin/press">{hidden}'
            f"<h3>{text_object(confirm.get('title', {'text': 'Are you sure?'}), self.users)}</h3>"
            f"<div>{text_object(confirm.get('text', {}), self.users)}</div>"
            f'<div class="buttons"><button class="btn" type="submit" formmethod="dialog">'
            f"{text_object(confirm.get('deny', {'text': 'Cancel'}), self.users)}</button>"
            f'<button class="btn {confirm_style}" type="submit">'
            f"{text_object(confirm.get('confirm', {'text': 'Yes'}), self.users)}</button></div>"
            f"</form></dialog></span>"
        )

    def element(self, message: dict[str, Any], block: dict[str, Any], element: Any) -> str:
        if not isinstance(element, dict):
            return ""
        if element.get("type") == "button":
            return self.button(message, block, element)
        if element.get("type") in ("mrkdwn", "plain_text"):
            return f"<span>{text_object(element, self.users)}</span>"
        if element.get("type") == "image":
            return f'<span class="unsupported">[image: {esc(element.get("alt_text", ""))}]</span>'
        return f'<span class="unsupported">[{esc(element.get("type", "?"))}: not in the stand-in]</span>'

    def block(self, message: dict[str, Any], block: Any) -> str:
        if not isinstance(block, dict):
            return ""
        kind = block.get("type")
        bid = f'data-block-id="{esc(block.get("block_id", ""))}"'
        if kind == "header":
            return f'<div class="block header" {bid}>{text_object(block.get("text"), self.users)}</div>'
        if kind == "divider":
            return "<hr>"
        if kind == "section":
            inner = f"<div>{text_object(block.get('text'), self.users)}</div>" if block.get("text") else ""
            fields = block.get("fields") or []
            if fields:
                inner += (
                    '<div class="fields">'
                    + "".join(f"<div>{text_object(f, self.users)}</div>" for f in fields)
                    + "</div>"
                )
            accessory = block.get("accessory")
            side = f"<div>{self.element(message, block, accessory)}</div>" if accessory else ""
            return f'<div class="block section" {bid}><div>{inner}</div>{side}</div>'
        if kind == "context":
            parts = "".join(self.element(message, block, e) for e in block.get("elements") or [])
            return f'<div class="block context" {bid}>{parts}</div>'
        if kind == "actions":
            parts = "".join(self.element(message, block, e) for e in block.get("elements") or [])
            return f'<div class="block actions" {bid}>{parts}</div>'
        if kind == "image":
            return f'<div class="block unsupported" {bid}>[image: {esc(block.get("alt_text", ""))}]</div>'
        return f'<div class="block unsupported" {bid}>[{esc(kind)} block: not in the stand-in]</div>'

    def message(self, message: dict[str, Any], replies: list[dict[str, Any]]) -> str:
        slackbot = message.get("user") == SLACKBOT_USER_ID
        author = "Slackbot" if slackbot else "Control plane"
        when = time.strftime("%H:%M:%S", time.localtime(float(message["ts"].split(".")[0])))
        edited = ' <span class="edited">(edited)</span>' if message.get("edits") else ""
        private = message.get("to_user")
        only_you = '<div class="only-you">Only visible to you</div>' if private else ""
        if message.get("blocks"):
            content = "".join(self.block(message, b) for b in with_ids(message["blocks"], message["ts"]))
        else:
            content = f'<div class="block">{mrkdwn(message.get("text", ""), self.users)}</div>'
        thread = ""
        if replies:
            count = f"{len(replies)} repl{'y' if len(replies) == 1 else 'ies'}"
            thread = (
                f'<div class="thread"><div class="thread-count">{count}</div>'
                + "".join(self.message(r, []) for r in replies)
                + "</div>"
            )
        return (
            f'<div class="msg{" ephemeral" if private else ""}" data-ts="{esc(message["ts"])}" '
            f'data-type="{esc(message["type"])}"><div class="avatar">{"SB" if slackbot else "CP"}</div>'
            f'<div class="body"><div class="meta"><b class="author">{author}</b> '
            f"{'' if slackbot else '<span class=app>APP</span> '}<time>{when}</time>{edited}</div>"
            f"{only_you}{content}{thread}</div></div>"
        )


def visible_to(message: dict[str, Any], user_id: str) -> bool:
    """Whether ``user_id`` sees this entry: not a replace/delete record, not someone else's ephemeral or DM."""
    if not message.get("channel"):
        return False
    if message["type"] == "response" and (message.get("replace_original") or message.get("delete_original")):
        return False
    if message.get("to_user") and message["to_user"] != user_id:
        return False
    channel = message["channel"]
    return not (channel.startswith("D") and channel != f"D{user_id}")


def _channel_label(channel: str, names: dict[str, str], users: dict[str, dict[str, Any]]) -> str:
    if channel.startswith("D"):
        return "@" + str(users.get(channel[1:], {}).get("name") or channel[1:])
    return f"#{names.get(channel, channel)}"


def _channel_path(channel: str, names: dict[str, str], query: str) -> str:
    # Channels by name, as Slack's own links read (/channels/data-incidents); direct messages by id.
    return f"/channels/{urllib.parse.quote(names.get(channel, channel))}{query}"


def render_page(
    *,
    channel: str,
    as_user: str,
    messages: list[dict[str, Any]],
    users: dict[str, dict[str, Any]],
    channels: dict[str, str],
    presses: list[dict[str, Any]],
) -> tuple[int, str]:
    """The page for ``channel`` (its name without ``#``, or a DM's id; empty: the latest active channel) as
    ``as_user`` sees it; ``channels`` maps the ids of named channels to their names. Returns the status and
    the HTML."""
    if as_user not in users:
        as_user = next(iter(users), "")
    query = f"?as={urllib.parse.quote(as_user)}" if as_user else ""
    seen = [m for m in messages if visible_to(m, as_user)]
    if not channel and seen:
        channel = channels.get(seen[-1]["channel"], seen[-1]["channel"])
    channel = channel or "general"
    # A channel without messages yet is shown empty; commands can be sent to it.
    current = channel if CHANNEL_ID.match(channel) else channel_id(channel)
    names = {**channels, current: channels.get(current, channel.lower())} if current.startswith("C") else channels
    view = _View(back=_channel_path(current, names, query), as_user=as_user, users=users)

    in_channel = [m for m in seen if m["channel"] == current]
    tops = [m for m in in_channel if not m.get("thread_ts") or m["thread_ts"] == m["ts"]]
    top_ts = {m["ts"] for m in tops}
    orphans = [m for m in in_channel if m not in tops and m["thread_ts"] not in top_ts]
    body = "".join(
        view.message(m, [r for r in in_channel if r.get("thread_ts") == m["ts"] and r is not m])
        for m in sorted(tops + orphans, key=lambda m: m["ts"])
    )
    if not body:
        body = f'<div class="empty">This is the very beginning of {esc(_channel_label(current, names, users))}.</div>'

    active = list(dict.fromkeys([m["channel"] for m in seen] + [current]))
    links = {
        "Channels": [c for c in active if not c.startswith("D")],
        "Direct messages": [c for c in active if c.startswith("D")],
    }
    sidebar = "".join(
        f"<h2>{title}</h2>"
        + "".join(
            f'<a href="{esc(_channel_path(c, names, query))}"'
            f"{' class=current' if c == current else ''}>{esc(_channel_label(c, names, users))}</a>"
            for c in listed
        )
        for title, listed in links.items()
        if listed
    )
    options = "".join(
        f'<option value="{esc(uid)}"{" selected" if uid == as_user else ""}>'
        f"{esc(u.get('name', uid))} ({esc(uid)})</option>"
        for uid, u in users.items()
    )
    picker = (
        f'<form method="get"><label>You are: <select name="as" onchange="this.form.submit()">{options}</select>'
        f"</label><noscript><button>Switch</button></noscript></form>"
        if users
        else '<span class="unsupported">No demo users: POST /_standin/users or --users-file</span>'
    )
    mine = [p for p in reversed(presses) if p.get("user") == as_user][:3]
    status = "".join(_press_line(p) for p in mine)
    status_list = f'<ul class="presses">{status}</ul>' if status else ""
    label = esc(_channel_label(current, names, users))
    # Commands name a channel as the page does: by name (the stand-in knows every named channel), DMs by id.
    composer_channel = f"#{names[current]}" if current in names else current
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{label} · Slack stand-in</title>
<style>{CSS}</style></head>
<body>
<aside><h1>demo</h1><nav id="channels">{sidebar}</nav></aside>
<main>
<header><h2>{label}</h2>{picker}</header>
<div id="live">{status_list}{body}</div>
<form class="composer" method="post" action="/_standin/command">
<input type="hidden" name="user" value="{esc(as_user)}">
<input type="hidden" name="channel" value="{esc(composer_channel)}">
<input type="hidden" name="back" value="{esc(view.back)}">
<input name="text" aria-label="Message" autocomplete="off"
 placeholder="Message {label} (slash commands: /runbook help)">
<button class="btn" type="submit">Send</button>
</form>
</main>
<script>{SCRIPT % REFRESH_MS}</script>
</body></html>
"""
    return 200, page


def _press_line(press: dict[str, Any]) -> str:
    what = (
        f"{press.get('command', '')} {press.get('text', '')}".strip()
        if press.get("kind") == "command"
        else f"{press.get('label', '')} ({press.get('action_id', '')})"
    )
    if press.get("status") == 200:
        result, css = f"answered 200 in {press.get('elapsed_ms', 0)} ms", ""
    else:
        result, css = f"failed: {press.get('error') or press.get('status')}", ' class="failed"'
    return f'<li data-testid="press-status"{css}>{esc(what.strip() or press.get("kind", ""))}: {esc(result)}</li>'
