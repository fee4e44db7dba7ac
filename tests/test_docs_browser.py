"""/docs in a real headless Chromium (Debian's package, driven by Playwright): it renders every
operation and "Try it out" reaches the same server."""

from tests.browser import skip_without_chromium

skip_without_chromium()


def test_docs_render_and_try_it_out_creates_a_user(browser, start_server, tmp_path):
    server = start_server("sqlite")
    page = browser.new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(request.url))
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
