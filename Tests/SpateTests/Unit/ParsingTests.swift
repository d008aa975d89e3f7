@testable import Spate
import Testing

@Suite("HTTP parsing")
struct HTTPParsingTests {
    @Test(arguments: [
        ("bytes 0-0/100", ByteRange(0, 1), Int64(100)),
        ("bytes 10-19/20", ByteRange(10, 20), 20),
        ("bytes 5-9/*", ByteRange(5, 10), nil),
        ("BYTES 0-9/10", ByteRange(0, 10), 10),
    ] as [(String, ByteRange, Int64?)])
    func contentRangeValid(text: String, range: ByteRange, length: Int64?) {
        let parsed = ContentRange(parsing: text)
        #expect(parsed?.range == range)
        #expect(parsed?.completeLength == length)
    }

    @Test func contentRangeUnsatisfied() {
        #expect(ContentRange(parsing: "bytes */1234") == ContentRange(range: nil, completeLength: 1234))
        #expect(ContentRange(parsing: "bytes */*") == nil)
    }

    @Test(arguments: [
        "", "bytes", "bytes=0-9/10", "bytes 9-0/10", "bytes 0-10/10", "bytes -1-5/10", "bytes 0-5",
        "bytes 0-5/x", "bytes 0-99999999999999999999/100", "bytes  0 - 5/10", "items 0-5/10", "bytes 0-5/10/2",
        "bytes +0-5/10",
    ])
    func contentRangeInvalid(text: String) {
        #expect(ContentRange(parsing: text) == nil, "\(text) must be refused")
    }

    @Test func headBuilderCollectsTheFinalResponse() {
        var builder = ResponseHeadBuilder()
        for line in ["HTTP/1.1 100 Continue\r\n", "\r\n", "HTTP/1.1 206 Partial Content\r\n",
                     "Content-Range: bytes 0-0/5\r\n", "ETag:  \"x\"  \r\n", "X-Folded: a\r\n", " b\r\n"] {
            let r = line.utf8CString.withUnsafeBytes { builder.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
            #expect(r == .more)
        }
        let end = "\r\n".utf8CString.withUnsafeBytes { builder.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        #expect(end == .headComplete)
        let head = builder.head!
        #expect(head.status == 206)
        #expect(head["content-range"] == "bytes 0-0/5")
        #expect(head["ETAG"] == "\"x\"")
        #expect(head["x-folded"] == "a b")
    }

    /// Status lines, parsed on bytes: the code is the field after the version (spaces before
    /// it skipped, as libcurl does), three digits, 100–999.
    @Test(arguments: [
        ("HTTP/1.1 206 Partial Content", 206), ("HTTP/2 200", 200), ("HTTP/2 200 ", 200), ("HTTP/1.1  404 Not Found", 404),
        ("HTTP/1.0 999 x", 999), ("HTTP/1.1 \t200\tOK", 200), ("HTTP/1.1 099 x", nil), ("HTTP/1.1 2000 x", nil), ("HTTP/1.1 20 x", nil),
        ("HTTP/1.1 2a0 x", nil), ("HTTP/1.1 +20 x", nil), ("HTTP/1.1", nil), ("HTTP/1.1 ", nil),
    ] as [(String, Int?)])
    func headBuilderStatusLines(line: String, status: Int?) {
        var builder = ResponseHeadBuilder()
        let r = (line + "\r\n").utf8CString.withUnsafeBytes { builder.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        #expect(r == (status == nil ? .malformed : .more), "\(line)")
        #expect(builder.status == status, "\(line)")
    }

    /// Whether the server keeps the connection open after a reply (RFC 9112 §9.3), which
    /// `ConnectGate` learns from every reply.
    @Test(arguments: [
        (["HTTP/1.1 200 OK"], true),
        (["HTTP/1.1 200 OK", "Connection: close"], false),
        (["HTTP/1.1 200 OK", "connection: Keep-Alive, Upgrade"], true),
        (["HTTP/1.1 200 OK", "Connection: Upgrade, CLOSE"], false),
        (["HTTP/1.0 200 OK"], false),
        (["HTTP/1.0 200 OK", "Connection: keep-alive"], true),
        (["HTTP/1.0 200 OK", "Connection: keep-alive", "Connection: close"], false),
        (["HTTP/2 200"], true),
        (["HTTP/1.1 200 OK", "Connection: \t close\t"], false),
        (["HTTP/1.1 200 OK", "Connection: ,, closed, xclose"], true),
        (["HTTP/1.0 200 OK", "Connection: keep-alive2"], false),
        (["HTTP/1.0 200 OK", "Connection: ,KEEP-ALIVE,"], true),
        (["HTTP/1.1 200 OK", "Connection:"], true),
    ] as [([String], Bool)])
    func headBuilderTellsWhetherTheConnectionStaysOpen(lines: [String], keeps: Bool) {
        var builder = ResponseHeadBuilder()
        for line in lines + [""] {
            _ = (line + "\r\n").utf8CString.withUnsafeBytes { builder.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        }
        #expect(builder.head != nil)
        #expect(builder.keepsConnection == keeps, "\(lines)")
    }

    @Test func headBuilderRejectsGarbageAndBombs() {
        var builder = ResponseHeadBuilder()
        let r = "no status line\r\n".utf8CString.withUnsafeBytes { builder.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        #expect(r == .malformed)
        var big = ResponseHeadBuilder()
        _ = "HTTP/1.1 200 OK\r\n".utf8CString.withUnsafeBytes { big.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        var last = ResponseHeadBuilder.LineResult.more
        for i in 0..<1000 where last == .more {
            last = "X-\(i): \(String(repeating: "a", count: 100))\r\n".utf8CString.withUnsafeBytes {
                big.feed(UnsafeRawBufferPointer(rebasing: $0.dropLast()))
            }
        }
        #expect(last == .tooLarge)
    }

    @Test func retryAfterForms() {
        #expect(RetryAfter.parse("120", now: 0) == .seconds(120))
        // A wait of zero (0, or a date that has passed) is no wait to honour: the backoff applies.
        #expect(RetryAfter.parse(" 0 ", now: 0) == nil)
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 seconds after the epoch.
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: 784_111_767) == .seconds(10))
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: 784_111_787) == nil)
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: 784_111_777) == nil)
        #expect(RetryAfter.parse("soon", now: 0) == nil)
        #expect(RetryAfter.parse("-5", now: 0) == nil)
        #expect(RetryAfter.parse(nil, now: 0) == nil)
    }
}

@Suite("Input validation")
struct InputValidationTests {
    @Test func checksumsParse() throws {
        let c = try Checksum(parsing: "SHA256:" + String(repeating: "Ab", count: 32))
        #expect(c.algorithm == .sha256 && c.digest.count == 32)
        #expect(try Checksum(parsing: "md5:" + String(repeating: "0", count: 32)).algorithm == .md5)
        #expect(try Checksum(parsing: "sha1:" + String(repeating: "0", count: 40)).algorithm == .sha1)
        #expect(try Checksum(parsing: "sha512:" + String(repeating: "f", count: 128)).algorithm == .sha512)
    }

    @Test(arguments: ["sha256", "sha256:abc", "sha256:" + String(repeating: "g", count: 64),
                      "adler32:00000000", "crc32:000000", "sha256:" + String(repeating: "0", count: 62), ":00"])
    func badChecksumsAreUsageErrors(text: String) {
        #expect(throws: SpateError.self) { try Checksum(parsing: text) }
        do { _ = try Checksum(parsing: text) } catch { #expect(error.kind == .usage) }
    }

    @Test func digestsMatchKnownVectors() {
        let abc = Array("abc".utf8)
        let sha256 = abc.withUnsafeBytes { Digest.hash(.sha256, $0) }
        #expect(Hex.encode(sha256) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let md5 = abc.withUnsafeBytes { Digest.hash(.md5, $0) }
        #expect(Hex.encode(md5) == "900150983cd24fb0d6963f7d28e17f72")
    }

    @Test func headersParseAndValidate() throws {
        let h = try HTTPHeader(parsing: "Authorization:  Bearer abc ")
        #expect(h.name == "Authorization" && h.value == "Bearer abc")
        #expect(h.description == "Authorization: Bearer ***")
        #expect(try HTTPHeader(parsing: "user-token: secret").description == "user-token: ***")
        #expect(try HTTPHeader(parsing: "X-Trace: 1").description == "X-Trace: 1")
    }

    @Test(arguments: ["NoColon", "X-A: b\r\nX-Injected: 1", "X-A: b\nc", "X-A: \0", ": value", "Bad Name: v",
                      "X-Empty:", "Range: bytes=0-1", "accept-encoding: gzip"])
    func badHeadersAreUsageErrors(line: String) {
        do {
            _ = try HTTPHeader(parsing: line)
            Issue.record("\(line.debugDescription) must be refused")
        } catch {
            #expect(error.kind == .usage)
        }
    }

    @Test func urlsParseAndRefuse() throws {
        let u = try RemoteURL("HTTP://Example.COM:8080/a%20b/file.bin?x=1")
        #expect(u.scheme == "http" && u.host == "example.com" && u.port == 8080)
        #expect(u.query == "x=1")
        #expect(try RemoteURL("https://h/x").port == 443)
        for bad in ["", "ftp://h/x", "file:///etc/passwd", "http://", "not a url", "http://h/\r\nx"] {
            do {
                _ = try RemoteURL(bad)
                Issue.record("\(bad.debugDescription) must be refused")
            } catch {
                #expect(error.kind == .usage)
            }
        }
    }

    @Test func redirectsResolveRelativeLocations() throws {
        let base = try RemoteURL("http://a.example/dir/file?q=1")
        #expect(try base.resolving("other").string == "http://a.example/dir/other")
        #expect(try base.resolving("/root").string == "http://a.example/root")
        #expect(try base.resolving("http://b.example:81/x").origin != base.origin)
    }

    @Test func optionsAreRangeChecked() {
        var o = DownloadOptions()
        o.connections = 0
        #expect(throws: SpateError.self) { try o.validate() }
        o.connections = DownloadOptions.maximumConnections + 1
        #expect(throws: SpateError.self) { try o.validate() }
        o.connections = 8
        o.chunkBytes = 0
        #expect(throws: SpateError.self) { try o.validate() }
    }
}

@Suite("Names, sizes and redaction")
struct NamingTests {
    /// The byte search on a string's storage finds what the `UTF8View` search finds, also
    /// after multi-byte scalars and a "/" beside a combining mark (one Character with it).
    @Test(arguments: ["a/b/c.bin", "no-slash", "/", "", "résumé/ü\u{301}/x", "\u{600}/\u{301}", "d/", "/lead"])
    func lastByteIndexAgreesWithTheUTF8View(text: String) {
        #expect(text.lastIndex(ofASCII: UInt8(ascii: "/")) == text.utf8.lastIndex(of: UInt8(ascii: "/")))
        let directory = FilePaths.directory(of: text)
        let slash = text.utf8.lastIndex(of: UInt8(ascii: "/"))
        #expect(directory == (slash.map { $0 == text.startIndex ? "/" : String(text[..<$0]) } ?? "."))
    }

    @Test(arguments: [
        ("file.bin", "file.bin"), ("../../etc/passwd", "passwd"), ("..", "download"), (".bashrc", "bashrc"),
        ("a\\b\\c.txt", "c.txt"), ("C:evil.exe", "Cevil.exe"), ("", "download"), ("name\u{7}\u{1B}.bin", "name.bin"),
        ("  spaced  ", "spaced"), ("résumé 2026.pdf", "résumé 2026.pdf"),
        // Found by fuzzing: spaces before a dot hid it from the dot rule.
        (" .bashrc", "bashrc"), (". . .", "download"), ("fi%/....  . ", "download"),
    ])
    func sanitizedNames(raw: String, expected: String) {
        #expect(FilePaths.sanitizedFileName(raw) == expected)
    }

    @Test func defaultNamesComeFromTheLastPathSegment() throws {
        #expect(FilePaths.defaultFileName(for: try RemoteURL("http://h/a/My%20File.iso?x=1")) == "My File.iso")
        #expect(FilePaths.defaultFileName(for: try RemoteURL("http://h/")) == "download")
        #expect(FilePaths.defaultFileName(for: try RemoteURL("http://h/d/%2e%2e")) == "download")
        #expect(FilePaths.defaultFileName(for: try RemoteURL("http://h/x/a%2Fb")) == "b")
    }

    @Test func byteSizes() {
        #expect(ByteSize.parse("4M") == 4 << 20)
        #expect(ByteSize.parse("1GiB") == 1 << 30)
        #expect(ByteSize.parse("512k") == 512 << 10)
        #expect(ByteSize.parse("100") == 100)
        #expect(ByteSize.parse("-1") == nil)
        #expect(ByteSize.parse("99999999999T") == nil)
        #expect(ByteSize.format(1023) == "1023 B")
        #expect(ByteSize.format(1536) == "1.50 KiB")
        #expect(ByteSize.format(1 << 30) == "1.00 GiB")
        #expect(ByteSize.formatRate(612.4 * 1048576) == "612 MiB/s")
    }

    @Test func urlsAreRedacted() {
        #expect(Redactor.url("https://user:pw@h.example/p?X-Amz-Signature=abc&v=2") == "https://***@h.example/p?X-Amz-Signature=***&v=***")
        #expect(Redactor.url("http://h/p") == "http://h/p")
        #expect(Redactor.url("http://h/p?token") == "http://h/p?***")
        #expect(Redactor.url("https://backendlessappcontent.com/A1B2C3D4-0000-4E5F/R3ST-K3Y0-0000-4ABC/files/a/b.pdf")
                == "https://backendlessappcontent.com/A1B2C3D4-0000-4E5F/***/files/a/b.pdf", "the REST API key is redacted")
        #expect(Redactor.originOnly("https://u:p@dl.boxcloud.com/d/1/secret/download?x=1") == "https://dl.boxcloud.com/…")
    }
}

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test func backoffGrowsWithJitterAndIsCapped() {
        let p = RetryPolicy(maxRetries: 5, baseDelay: .milliseconds(100), maxDelay: .seconds(1))
        #expect(p.delay(attempt: 1, retryAfter: nil, random: 0) == .milliseconds(50))
        #expect(p.delay(attempt: 1, retryAfter: nil, random: 1) == .milliseconds(100))
        #expect(p.delay(attempt: 3, retryAfter: nil, random: 1) == .milliseconds(400))
        #expect(p.delay(attempt: 30, retryAfter: nil, random: 1) == .seconds(1))
        #expect(p.delay(attempt: 2, retryAfter: .seconds(5), random: 0.3) == .seconds(1), "Retry-After is capped")
        #expect(p.delay(attempt: 2, retryAfter: .milliseconds(300), random: 0.3) == .milliseconds(300))
    }
}
