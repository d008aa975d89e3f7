@testable import Spate
import Testing

/// What an error reply's body adds to the message: a JSON or XML explanation whole (on one
/// line), a web server's stock HTML page only by its title, and nothing that repeats the status.
@Suite("Error bodies")
struct ErrorBodyTests {
    private func body(_ text: String) -> ErrorBody {
        var body = ErrorBody()
        _ = Array(text.utf8).withUnsafeBytes { body.append($0) }
        return body
    }

    private func message(_ status: Int, _ text: String) throws -> String {
        StatusReply(head: ResponseHead(status: status), body: body(text), url: try RemoteURL("http://h/f"), wallSeconds: 0).message
    }

    static let nginx404 = """
        <html>\r
        <head><title>404 Not Found</title></head>\r
        <body>\r
        <center><h1>404 Not Found</h1></center>\r
        <hr><center>nginx/1.22.1</center>\r
        </body>\r
        </html>\r

        """

    @Test func aStockPageAddsNothingToTheStatusLine() throws {
        #expect(body(Self.nginx404).htmlTitle == "404 Not Found")
        #expect(try message(404, Self.nginx404) == "HTTP 404 Not Found from http://h/f")
        let apache = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<TITLE>403 Forbidden</TITLE>\n</head><body>\n<h1>Forbidden</h1>\n</body></html>\n"
        #expect(try message(403, apache) == "HTTP 403 Forbidden from http://h/f")
    }

    @Test func aPageWithItsOwnTitleGivesTheTitle() throws {
        let page = "  <!doctype html><html><head><meta charset=utf-8><title>Access denied | files.example.com</title></head><body>" + String(repeating: "<div>x</div>", count: 50) + "</body></html>"
        #expect(try message(403, page) == "HTTP 403 Forbidden from http://h/f: Access denied | files.example.com")
        #expect(try message(500, "<html><body>Oops</body></html>") == "HTTP 500 Internal Server Error from http://h/f")
        #expect(try message(403, "<html><body><H1 class=x>Your IP is blocked</H1><p>more</p></body></html>")
                == "HTTP 403 Forbidden from http://h/f: Your IP is blocked")
    }

    @Test func jsonAndXMLExplanationsAreKeptOnOneLine() throws {
        let box = "{\"type\":\"error\",\"status\":404,\n\"code\":\"not_found\",\"message\":\"Not Found\"}"
        #expect(body(box).htmlTitle == nil)
        #expect(try message(404, box) == "HTTP 404 Not Found from http://h/f: {\"type\":\"error\",\"status\":404, \"code\":\"not_found\",\"message\":\"Not Found\"}")
        let s3 = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        #expect(try message(403, s3).hasSuffix(": <?xml version=\"1.0\" encoding=\"UTF-8\"?> <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"))
        #expect(try message(404, "Not Found") == "HTTP 404 Not Found from http://h/f")
    }
}
