"""Take the README's picture of the browser client: a chat with a file in progress.

    .venv/bin/python -m tests.web_screenshot docs/images/browser-chat.png

The scene is tests/test_web_page.py's chat_with_a_file_in_progress (which a
test checks still renders), on the fake engine, in Debian's Chromium.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.test_web_page import CHROMIUM, CHROMIUM_ARGS, Visit, chat_with_a_file_in_progress
from tests.web_server import PageServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=820)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args()
    with PageServer() as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": args.width, "height": args.height},
            device_scale_factor=1,
            color_scheme="dark" if args.dark else "light",
        )
        visit = Visit(context.new_page(), context, server)
        chat_with_a_file_in_progress(visit)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(args.output))
        browser.close()
    print(args.output)


if __name__ == "__main__":
    main()
