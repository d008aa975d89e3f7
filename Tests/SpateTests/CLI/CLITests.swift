import Foundation
import Glibc
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// The `spate` command end to end: the real binary, its output and its exit codes.
@Suite("CLI")
struct CLITests {
    /// Bad input fails with one clear line and exit code 2 (usage) or 6 (local I/O), before any
    /// network traffic: the server must see no request.
    @Test("bad input", arguments: [
        (["not a url"], Int32(2), "invalid URL"),
        (["ftp://127.0.0.1/x"], 2, "unsupported URL scheme"),
        (["URL", "-c", "0"], 2, "connections must be between 1 and"),
        (["URL", "-c", "1000"], 2, "connections must be between 1 and"),
        (["URL", "--checksum", "sha256"], 2, "expected ALG:HEX"),
        (["URL", "--checksum", "sha256:abcd"], 2, "has 64 hex digits"),
        (["URL", "--checksum", "crc9:00"], 2, "unknown checksum algorithm"),
        (["URL", "-H", "X-A: b\r\nX-Injected: 1"], 2, "CR, LF or NUL"),
        (["URL", "-H", "NoColonHere"], 2, "expected 'Name: value'"),
        // A malformed header is often a secret with a typo: its value is never shown.
        (["URL", "-H", "Authorization Bearer SECRET-TOKEN-1"], 2, "invalid header \"Authorization\" (the rest not shown)"),
        (["URL", "-H", "X-A: b\r\nX-Injected: SECRET-TOKEN-1"], 2, "header \"X-A\" (the rest not shown) contains CR, LF or NUL"),
        (["URL", "-H", "SECRET-TOKEN-1abcdefghijklmnopqrstuvwxyz0123456789"], 2, "invalid header (not shown)"),
        (["URL", "-c"], 2, "Missing value for '-c <N>' (see spate --help)"),
        (["URL", "-o", String(repeating: "a", count: 256)], 2, "is longer than 255 bytes"),
        (["URL", "--chunk-size", "lots"], 2, "invalid --chunk-size"),
        (["URL", "-o", "/nonexistent-dir/x/out.bin"], 6, "cannot write to directory"),
        (["URL", "--bogus-flag"], 2, "Unknown option"),
        (["URL", "--stall-timeout", "0"], 2, "--stall-timeout must be between"),
        (["URL", "--min-speed", "fast"], 2, "invalid --min-speed"),
        (["URL", "--max-retries=-1"], 2, "--max-retries must be between"),
        // Issue 15: no trap, no "Missing value", a message that says what is wrong.
        (["URL", "-c", "-1"], 2, "connections must be between 1 and"),
        (["URL", "--max-retries", "-1"], 2, "--max-retries must be between"),
        (["URL", "--checksum", "sha256:abc"], 2, "a sha256 checksum has 64 hex digits, not 3"),
        (["URL", "--checksum", "sha256:xyz"], 2, "is not hexadecimal"),
        (["URL", "--chunk-size", "1"], 2, "invalid --chunk-size"),
        (["URL", "--chunk-size", "9223372036854775807"], 2, "invalid --chunk-size"),
        (["URL", "--range", "0-9223372036854775807"], 2, "invalid --range"),
        (["URL", "--range", "1000-9223372036854775806"], 2, "invalid --range"),
        (["URL", "--range", "9223372036854775806-"], 2, "invalid --range"),
        (["URL", "--min-speed", "9223372036854775807"], 2, "invalid --min-speed"),
    ] as [([String], Int32, String)])
    func badInput(arguments: [String], status: Int32, message: String) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let args = arguments.map { $0 == "URL" ? server.url("/gen/1M") : $0 }
            let out = try await CLIRunner.run(args, in: dir.path)
            #expect(out.status == status, "stderr: \(out.stderr)")
            #expect(out.stderr.contains(message), "stderr: \(out.stderr)")
            #expect(out.stderr.hasPrefix("spate: error:"), "stderr: \(out.stderr)")
            #expect(out.stderr.split(separator: "\n").count == 1, "one line: \(out.stderr)")
            #expect(server.requests.isEmpty, "no traffic before input is validated")
            #expect(!out.stderr.contains("SECRET"), "stderr: \(out.stderr)")
            #expect(dir.contents.isEmpty)
        }
    }

    /// `spate journal show` follows the same rules: bad arguments are exit 2 and one line.
    @Test(arguments: [["journal", "show"], ["journal", "show", "x", "--limit", "abc"], ["journal", "list"]])
    func journalCommandArgumentErrors(arguments: [String]) throws {
        let out = try CLIRunner.run(arguments)
        #expect(out.status == 2, "stderr: \(out.stderr)")
        #expect(out.stderr.hasPrefix("spate: error:") && out.stderr.hasSuffix("(see spate journal show --help)\n"), "stderr: \(out.stderr)")
        #expect(out.stderr.split(separator: "\n").count == 1, "one line: \(out.stderr)")
    }

    @Test func unwritableOutputDirectoryIsRefusedUpFront() async throws {
        let dir = try TemporaryDirectory()
        let locked = dir.file("locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
        chmod(locked, 0o500)
        defer { chmod(locked, 0o700) }
        // root ignores directory permissions; the check is only meaningful for other users.
        guard getuid() != 0 else {
            let out = try await CLIRunner.run(["http://127.0.0.1:9/x", "-o", "/proc/version/x"])
            #expect(out.status == 6 && out.stderr.contains("cannot write to directory"))
            return
        }
        let out = try await CLIRunner.run(["http://127.0.0.1:9/x", "-o", locked + "/x"])
        #expect(out.status == 6)
        #expect(out.stderr.contains("cannot write to directory"))
    }

    @Test func downloadsWithTheDocumentedForm() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 77, size: 3_000_017)
            server.addFile("/data/My%20File.bin", TestServer.File(content: content))
            let checksum = sha256Checksum(of: content)
            let out = try await CLIRunner.run([server.url("/data/My%20File.bin"), "-c", "3", "--chunk-size", "256K",
                                         "--checksum", "sha256:\(checksum.hex)"], in: dir.path)
            #expect(out.status == 0, "stderr: \(out.stderr)")
            #expect(dir.contents == ["My File.bin"], "named from the URL, percent-decoded")
            #expect(compareFile(dir.file("My File.bin"), with: content) == nil)
            // stderr is not a TTY here: one summary line, nothing else.
            let lines = out.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains("saved") && lines[0].contains("sha256 verified"), "\(out.stderr)")

            // Again: the file exists, so without --force it is refused (exit 6) and kept.
            let again = try await CLIRunner.run([server.url("/data/My%20File.bin"), "-o", dir.file("My File.bin")])
            #expect(again.status == 6 && again.stderr.contains("already exists"))
            #expect(compareFile(dir.file("My File.bin"), with: content) == nil)
            let forced = try await CLIRunner.run([server.url("/data/My%20File.bin"), "-o", dir.file("My File.bin"), "--force", "-q"])
            #expect(forced.status == 0, "stderr: \(forced.stderr)")
        }
    }

    @Test func exitCodesForServerSideFailures() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 1, size: 100_000)
            server.addFile("/f.bin", TestServer.File(content: content))
            let notFound = try await CLIRunner.run([server.url("/nope.bin"), "-o", dir.file("a")])
            #expect(notFound.status == 4 && notFound.stderr.contains("HTTP 404"), "\(notFound.stderr)")
            let mismatch = try await CLIRunner.run([server.url("/f.bin"), "-o", dir.file("b"),
                                              "--checksum", "md5:" + String(repeating: "0", count: 32)])
            #expect(mismatch.status == 5 && mismatch.stderr.contains("checksum mismatch"), "\(mismatch.stderr)")
            let refused = try await CLIRunner.run(["http://127.0.0.1:1/x", "-o", dir.file("c"), "--max-retries", "0"])
            #expect(refused.status == 3, "\(refused.stderr)")
            #expect(dir.contents.isEmpty)
        }
    }

    /// `spate --help` with every run of whitespace made one space (wrapping does not matter).
    static func helpText() throws -> String {
        try CLIRunner.run(["--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    static func readme() throws -> String {
        try String(contentsOfFile: FuzzCorpusTests.root.appendingPathComponent("README.md").path, encoding: .utf8)
    }

    @Test func helpDocumentsTheExitCodes() throws {
        let out = try CLIRunner.run(["--help"])
        #expect(out.status == 0)
        for line in ["Exit codes:", "2    usage error", "3    network failure", "4    HTTP error", "5    checksum mismatch", "6    local I/O"] {
            #expect(out.stdout.contains(line), "missing \(line)")
        }
    }

    /// `--mirror` end to end: both hosts serve ranges, the summary is exact, and it is for one
    /// URL (a batch puts mirrors on the manifest line). Help and README say so.
    @Test func aMirrorOnTheCommandLine() async throws {
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            let content = GeneratedContent(seed: 145, size: 4 << 20)
            let file = TestServer.File(content: content)
            server.setHook { request in
                var plan = TestServer.standardPlan(for: request, file: file)
                plan.bytesPerSecond = 2 << 20  // the download outlasts the mirror's probe
                return plan
            }
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([server.url("/f.bin"), "--mirror", server.url("/f.bin", host: "127.0.0.2"),
                                         "-o", dir.file("f.bin"), "-c", "4", "--chunk-size", "256K", "--no-tuning"])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(out.stderr.contains("also fetching from the mirror 127.0.0.2:") && out.stderr.contains("(2 sources)"), "\(out.stderr)")
            let hosts = Set(server.requests.filter { $0.header("range") != "bytes=0-0" }.map(\.host))
            #expect(hosts == ["127.0.0.1", "127.0.0.2"])
            let batch = try await CLIRunner.run([server.url("/f.bin"), server.url("/f.bin"), "--mirror", server.url("/f.bin", host: "127.0.0.2")])
            #expect(batch.status == 2 && batch.stderr.contains("TAB-separated"), "\(batch.stderr)")
        }
        let help = try Self.helpText()
        #expect(help.contains("--mirror <URL>") && help.contains("-H headers go only to the URL's own scheme, host and port"), "\(help)")
        #expect(help.contains("--http2 Use HTTP/2 over TLS when the server offers it: ranges multiplexed, \(CurlLoop.streamsPerConnection) per connection"),
                "\(help)")
        let readme = try Self.readme()
        #expect(readme.contains("`--mirror URL`") && readme.contains("`--http2`"))
    }

    /// `-V`/`--version` (curl's and wget2's spelling): spate's version and the libraries it
    /// runs with, on stdout, exit 0, without starting the demo; help and README say so.
    @Test func versionNamesSpateAndItsLibraries() throws {
        for flag in ["--version", "-V"] {
            let out = try CLIRunner.run([flag])
            #expect(out.status == 0, "\(out.stderr)")
            let lines = out.stdout.split(separator: "\n").map(String.init)
            #expect(lines.first == "spate \(SpateVersion.string)", "\(out.stdout)")
            #expect(lines.contains { $0.hasPrefix("libcurl \(CurlGlobal.version) (") && $0.contains("HTTP/2: ") }, "\(out.stdout)")
            #expect(lines.contains { $0.hasPrefix("OpenSSL 3") } && lines.contains { $0.hasPrefix("liblz4 1.") }, "\(out.stdout)")
            let crc64 = DigestAlgorithm.crc64nvme.isAvailable ? "CRC-64/NVME: yes" : "CRC-64/NVME: no"
            #expect(lines.contains { $0.hasPrefix("ISA-L") && $0.contains(crc64) }, "\(out.stdout)")
            #expect(out.stderr.isEmpty, "\(out.stderr)")
        }
        let help = try Self.helpText()
        #expect(help.contains("-V, --version Print spate's version and the versions of the libraries it runs with"), "\(help)")
        let readme = try Self.readme()
        #expect(readme.contains("| `-V, --version` |"))
    }

    /// The overview and the discussion are wrapped to fit 80 columns as written: a longer line
    /// is wrapped again by the argument parser, leaving one-word fragments ("and", "verified.").
    @Test func helpTextIsNotWrappedTwice() throws {
        let out = try CLIRunner.run(["--help"])
        let head = try #require(out.stdout.components(separatedBy: "USAGE:").first)
        for line in head.split(separator: "\n") where !line.allSatisfy(\.isWhitespace) {
            #expect(line.count <= 80, "too wide: \(line)")
            #expect(line.split(separator: " ").count > 1 || line.hasSuffix(":"), "a fragment of a line wrapped twice: \(line)")
        }
        #expect(head.contains("\n  spate journal show PATH [--json]\n"))
    }

    /// `-k` is curl's and wget2's short name for `--insecure`.
    @Test func dashKIsInsecure() throws {
        let help = try Self.helpText()
        #expect(help.contains("-k, --insecure Do not verify TLS certificates"), "\(help)")
        let readme = try Self.readme()
        #expect(readme.contains("| `-k, --insecure` |"))
    }

    /// `-4`/`-6` (curl's spelling) limit the addresses a name resolves to: the test server
    /// listens on 127.0.0.1 only, so `localhost` works with `-4` and fails with `-6` (no IPv6
    /// address, or nothing listening on ::1): exit 3. Both at once is a usage error.
    @Test func dash4AndDash6PickTheAddressFamily() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 146, size: 100_000)
            server.addFile("/f.bin", TestServer.File(content: content))
            let url = server.url("/f.bin").replacingOccurrences(of: "127.0.0.1", with: "localhost")
            let dir = try TemporaryDirectory()
            let v4 = try await CLIRunner.run([url, "-o", dir.file("a.bin"), "-4"])
            #expect(v4.status == 0, "\(v4.stderr)")
            #expect(compareFile(dir.file("a.bin"), with: content) == nil)
            let v6 = try await CLIRunner.run([url, "-o", dir.file("b.bin"), "--ipv6", "--max-retries", "0"])
            #expect(v6.status == 3, "\(v6.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("b.bin")))
            let both = try await CLIRunner.run([url, "-o", dir.file("c.bin"), "-4", "-6"])
            #expect(both.status == 2 && both.stderr.contains("-4 and -6 exclude each other"), "\(both.stderr)")
        }
        let help = try Self.helpText()
        #expect(help.contains("-4, --ipv4 Connect to IPv4 addresses only") && help.contains("-6, --ipv6 Connect to IPv6 addresses only"), "\(help)")
        let readme = try Self.readme()
        #expect(readme.contains("| `-4, --ipv4`, `-6, --ipv6` |"))
    }

    /// `--connect-timeout` (curl's name) bounds the wait for a connection: a listening socket
    /// whose queue is full and that never accepts drops the SYN, so the connection is never
    /// made; the attempt ends at the timeout given, not at the default 15 s.
    @Test func connectTimeoutBoundsTheWaitForAConnection() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 0) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        // Fill the queue (backlog 0 holds one connection; a few more to be sure), never accept.
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<3 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            fillers.append(client)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) } }
        }
        let port = UInt16(bigEndian: address.sin_port)
        let dir = try TemporaryDirectory()
        let out = try CLIRunner.run(["http://127.0.0.1:\(port)/f.bin", "-o", dir.file("f.bin"), "--connect-timeout", "0.5",
                                     "--max-retries", "0"])
        #expect(out.status == 3, "\(out.stderr)")
        let waited = out.stderr.firstMatch(of: /after (\d+) m/).flatMap { Int($0.1) }
        #expect(waited.map { $0 >= 500 && $0 < 5000 } == true, "the connection attempt ended at the timeout: \(out.stderr)")
        let bad = try CLIRunner.run(["http://127.0.0.1:\(port)/f.bin", "--connect-timeout", "0"])
        #expect(bad.status == 2 && bad.stderr.contains("--connect-timeout must be between"), "\(bad.stderr)")
        let help = try Self.helpText()
        #expect(help.contains("--connect-timeout <SECONDS> Longest wait for a connection"), "\(help)")
        let readme = try Self.readme()
        #expect(readme.contains("| `--connect-timeout SECONDS` |"))
    }

    /// `--limit-rate` is curl's name for `--max-rate`: the same option, the same checks.
    @Test func limitRateIsMaxRate() throws {
        let bad = try CLIRunner.run(["http://127.0.0.1:1/f.bin", "--limit-rate", "10"])
        #expect(bad.status == 2 && bad.stderr.contains("invalid --max-rate \"10\""), "\(bad.stderr)")
        let help = try Self.helpText()
        #expect(help.contains("--max-rate, --limit-rate <SIZE> Most bytes per second"), "\(help)")
    }

    /// `-c`'s help says where the tuner starts, as the library does (and README).
    @Test func helpSaysWhereTheConnectionCountStarts() throws {
        let out = try CLIRunner.run(["--help"])
        let text = out.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(text.contains("spate starts with \(DownloadOptions().initialConnections) and adds more"), "\(text)")
        #expect(DownloadOptions().initialConnections == 16, "README's command-line table says 16")
    }

    /// Issue 15's promises, in --help as in README.
    @Test func helpSaysWhatTheHardeningPromises() throws {
        let out = try CLIRunner.run(["--help"])
        let text = out.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for phrase in [
            "another spate process writing the same output",
            "never a partial file another spate process is writing",
            "130 interrupted (SIGINT, SIGTERM, SIGHUP",
            "A stalled attempt counts as a failure however many bytes it moved",
            "0: only a request that receives nothing for --stall-timeout is cut",
            "go unnoticed unless --checksum is given",
            "from 4K",
            "141 the reader of -o - (or of a FIFO) stopped reading",
            "'-': standard output, in order",
            "Reorder window of an ordered stream",
            "Most bytes per second across all connections",
            "a transfer held back by it never counts as stalled",
            "Write a Chrome trace-event JSON of the run",
            "Benchmarks: spate bench sweeps settings", "spate bench URL [--connections 1,2,4,...]",
            "Do not verify the whole-file digest the server publishes",
        ] {
            #expect(text.contains(phrase), "--help lacks: \(phrase)")
        }
        let readme = try Self.readme()
            .split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for phrase in ["another spate process is writing the same output", "go unnoticed unless `--checksum` is given",
                       "from 4 KiB to 1 EiB", "SIGHUP", "| 141 |", "`-o -`", "`--window SIZE`", "`--discard`",
                       "`--max-rate SIZE`", "`--trace FILE`", "`spate bench URL"] {
            #expect(readme.contains(phrase), "README lacks: \(phrase)")
        }
    }
}
