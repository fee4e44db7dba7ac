"""/docs in a real headless Chromium (Debian's package, driven by Playwright): it renders every
operation and "Try it out" reaches the same server."""

import re

from tests.browser import skip_without_chromium

skip_without_chromium()


def test_docs_render_and_try_it_out_creates_a_user(browser, start_server, tmp_path):
    server = start_server("sqlite")
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(request.url))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))  # CSP refusals
    page.goto(server.api.base_url + "/docs")  # the front page is the dashboard; the API documentation is here
    page.wait_for_selector(".opblock-summary", timeout=20000)
    described = len(server.api.get("/openapi.json").json()["paths"])
    assert page.locator(".opblock-tag-section").count() >= 4
    assert page.locator(".opblock").count() >= described

    operation = page.locator("#operations-Users-createUser")
    operation.locator(".opblock-summary").click()  # tryItOutEnabled: the editor is open already
    operation.locator("textarea.body-param__text").fill('{"name": "From Swagger", "email": "swagger@example.com"}')
    operation.locator("button.execute").click()
    operation.locator(".responses-table.live-responses-table").wait_for(timeout=10000)
    assert operation.locator(".live-responses-table tbody .response-col_status").first.inner_text().strip() == "201"
    page.screenshot(path=str(tmp_path / "docs.png"))

    users = server.api.get("/api/users/").json()["data"]
    assert [u["email"] for u in users] == ["swagger@example.com"]
    assert problems == []
    assert not re.search(r" (4|5)[0-9][0-9] ", server.log()), server.log()  # no favicon 404 either


def test_docs_cannot_be_framed_by_another_site(browser, start_server):
    """A framed /docs would let another page trick a click on Execute into a request made
    with the server's trust (the loopback default needs no key)."""
    server = start_server("sqlite")
    docs = server.api.get("/docs")
    assert "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]
    assert "script-src 'self';" in docs.headers["Content-Security-Policy"]  # no inline script
    assert docs.headers["X-Frame-Options"] == "DENY" and "<script>" not in docs.text
    page = browser.new_page()
    attacker = f'<h1>Win a prize</h1><iframe width="900" height="700" src="{server.api.base_url}/docs"></iframe>'
    page.route("http://attacker.example/", lambda route: route.fulfill(content_type="text/html", body=attacker))
    page.goto("http://attacker.example/")
    page.wait_for_load_state("load")  # the frame's load included
    framed = page.frames[1]
    assert framed.url.startswith("chrome-error://"), framed.url  # Chromium refused to show it
    assert framed.locator("#swagger-ui").count() == 0
