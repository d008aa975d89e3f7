import Foundation
import Glibc
@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// Box and Backendless downloads against the emulations, through the real `spate` binary where
/// the CLI is what matters (tokens from the environment or files, -J, --range, --verbose).
@Suite("Cloud file APIs", .timeLimit(.minutes(5)))
struct CloudAPITests {
    static let hosts = ["127.0.0.1", "127.0.0.2"]

    func withCloud(notReady: Int = 0, uses: Int = 1000,
                   _ body: (TestServer, BoxEmulation, BackendlessEmulation) async throws -> Void) async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let box = BoxEmulation(server: server, notReadyReplies: notReady, usesPerDownloadURL: uses)
            let backendless = BackendlessEmulation(server: server)
            server.emulateCloudAPIs(box: box, backendless: backendless)
            try await body(server, box, backendless)
        }
    }

    /// No request to the download host / custom domain carried a credential.
    func expectNoCredentialsOnSecondHost(_ server: TestServer, sourceLocation: SourceLocation = #_sourceLocation) {
        for r in server.requests where r.host == "127.0.0.2" {
            for name in ["authorization", "boxapi", "user-token", "cookie"] {
                #expect(r.header(name) == nil, "\(name) reached 127.0.0.2: \(r.uri)", sourceLocation: sourceLocation)
            }
        }
    }

    // MARK: Box

    @Test func boxWithABearerTokenFromTheEnvironment() async throws {
        try await withCloud { server, box, _ in
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([box.url(), "-o", "file.pdf", "--bearer-token-env", "BOX_TOKEN", "-c", "4"],
                                        in: dir.path, environment: ["BOX_TOKEN": box.token])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("file.pdf"), with: box.currentVersion.content) == nil)
            #expect(server.requests.filter { $0.host == "127.0.0.1" }.allSatisfy { $0.header("authorization") == "Bearer \(box.token)" })
            expectNoCredentialsOnSecondHost(server)
            #expect(!out.stderr.contains(box.token), "the token never appears in output")
        }
    }

    @Test func boxBearerTokenFromAFileAndVersions() async throws {
        try await withCloud { server, box, _ in
            let dir = try TemporaryDirectory()
            try "\(box.token)\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
            let old = try await CLIRunner.run([box.url(version: box.versions[0].id), "-o", "v1.pdf", "--bearer-token-file", "token"], in: dir.path)
            #expect(old.status == 0, "\(old.stderr)")
            #expect(compareFile(dir.file("v1.pdf"), with: box.versions[0].content) == nil, "?version= selects the old content")
            let current = try await CLIRunner.run([box.url(), "-o", "v2.pdf", "--bearer-token-file", "token"], in: dir.path)
            #expect(current.status == 0)
            #expect(compareFile(dir.file("v2.pdf"), with: box.currentVersion.content) == nil)
            let missing = try await CLIRunner.run([box.url(version: "999"), "-o", "v9.pdf", "--bearer-token-file", "token"], in: dir.path)
            #expect(missing.status == 4 && missing.stderr.contains("HTTP 404"), "\(missing.stderr)")
        }
    }

    @Test func boxSharedLinksWithAndWithoutPassword() async throws {
        try await withCloud { server, box, _ in
            let dir = try TemporaryDirectory()
            try "BoxApi: shared_link=\(box.sharedLink)\n".write(toFile: dir.file("open.txt"), atomically: true, encoding: .utf8)
            let open = try await CLIRunner.run([box.url(), "-o", "a.pdf", "--header-file", "open.txt"], in: dir.path)
            #expect(open.status == 0, "\(open.stderr)")
            #expect(compareFile(dir.file("a.pdf"), with: box.currentVersion.content) == nil)

            let protected = "BoxApi: shared_link=\(box.protectedLink)&shared_link_password=\(box.sharedLinkPassword)\n"
            try protected.write(toFile: dir.file("pw.txt"), atomically: true, encoding: .utf8)
            let withPassword = try await CLIRunner.run([box.url(), "-o", "b.pdf", "--header-file", "pw.txt"], in: dir.path)
            #expect(withPassword.status == 0, "\(withPassword.stderr)")
            #expect(compareFile(dir.file("b.pdf"), with: box.currentVersion.content) == nil)

            try "BoxApi: shared_link=\(box.protectedLink)&shared_link_password=wrong\n".write(
                toFile: dir.file("bad.txt"), atomically: true, encoding: .utf8)
            let wrong = try await CLIRunner.run([box.url(), "-o", "c.pdf", "--header-file", "bad.txt"], in: dir.path)
            #expect(wrong.status == 4 && wrong.stderr.contains("incorrect_shared_item_password"), "\(wrong.stderr)")
            #expect(!wrong.stderr.contains("wrong"), "the password is not echoed")
            #expect(!FileManager.default.fileExists(atPath: dir.file("c.pdf")))
            expectNoCredentialsOnSecondHost(server)
        }
    }

    @Test func boxWithoutCredentialsIsAClearError() async throws {
        try await withCloud { _, box, _ in
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([box.url(), "-o", "x.pdf"], in: dir.path)
            #expect(out.status == 4 && out.stderr.contains("HTTP 401 Unauthorized"), "\(out.stderr)")
            #expect(dir.contents.isEmpty)
        }
    }

    @Test func boxAcceptedWithRetryAfterWhileTheFileIsNotReady() async throws {
        try await withCloud(notReady: 2) { server, box, _ in
            var options = testOptions(connections: 4)
            options.retry = RetryPolicy(maxRetries: 4, baseDelay: .milliseconds(5), maxDelay: .seconds(5))
            options.headers = [try HTTPHeader(parsing: "Authorization: Bearer \(box.token)")]
            let dir = try TemporaryDirectory()
            _ = try await download(box.url(), to: dir.file("f"), options: options).get()
            #expect(compareFile(dir.file("f"), with: box.currentVersion.content) == nil)
            let api = server.requests.filter { $0.host == "127.0.0.1" }
            try #require(api.count >= 3)
            #expect(api[2].arrival - api[0].arrival >= .seconds(2), "waited for Retry-After: 1 twice")
        }
    }

    @Test func boxDownloadURLExpiringMidDownloadIsResolvedAgain() async throws {
        try await withCloud(uses: 3) { server, box, _ in
            var options = testOptions(connections: 4, chunk: 512 * 1024)
            options.headers = [try HTTPHeader(parsing: "Authorization: Bearer \(box.token)"),
                               try HTTPHeader(parsing: "BoxApi: shared_link=\(box.sharedLink)")]
            let dir = try TemporaryDirectory()
            _ = try await download(box.url(), to: dir.file("f"), options: options).get()
            #expect(compareFile(dir.file("f"), with: box.currentVersion.content) == nil)
            #expect(box.issuedDownloadURLs > 2, "new download URLs were issued as old ones expired")
            #expect(server.requests.contains { $0.host == "127.0.0.2" && $0.header("range") != nil } )
            expectNoCredentialsOnSecondHost(server)
        }
    }

    @Test func boxPartialRangeIsByteExact() async throws {
        try await withCloud { server, box, _ in
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([box.url(), "-o", "part.bin", "--range", "1000-2000999", "-c", "4", "--chunk-size", "128K",
                                         "--bearer-token-env", "T"], in: dir.path, environment: ["T": box.token])
            #expect(out.status == 0, "\(out.stderr)")
            let expected = box.currentVersion.content.bytes(1000, 2_001_000)
            let got = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("part.bin"))))
            #expect(got == expected)
            let ranges = server.requests.filter { $0.host == "127.0.0.2" }.compactMap { $0.header("range") }.filter { $0 != "bytes=0-0" }
            #expect(ranges.count > 4, "the range was split across requests")
        }
    }

    @Test func boxNamesFromContentDispositionAndNeverOverwrites() async throws {
        try await withCloud { _, box, _ in
            let dir = try TemporaryDirectory()
            let first = try await CLIRunner.run([box.url(), "-J", "--bearer-token-env", "T"], in: dir.path, environment: ["T": box.token])
            #expect(first.status == 0, "\(first.stderr)")
            #expect(dir.contents == ["Quarterly report €.pdf"], "filename* (UTF-8) wins")
            let again = try await CLIRunner.run([box.url(), "-J", "--force", "--bearer-token-env", "T"], in: dir.path, environment: ["T": box.token])
            #expect(again.status == 6 && again.stderr.contains("never replaces a file named by the server"), "\(again.stderr)")
        }
    }

    /// kill -9 mid-download, then resume: the expired download URL is resolved again from the
    /// API, and the journal holds neither the signed URL nor any credential.
    @Test func boxResumeAfterKillResolvesTheURLAgain() async throws {
        try await withCloud(uses: 1000) { server, box, _ in
            let dir = try TemporaryDirectory()
            let killer = KillSwitch()
            killer.arm(at: 5)
            server.setHook { request in
                if request.host == "127.0.0.2" { killer.observe(request) }
                guard var plan = box.handle(request) else { return nil }
                if request.host == "127.0.0.2" { plan.bytesPerSecond = 2_000_000 }
                return plan
            }
            let args = [box.url(), "-o", "f.pdf", "-c", "2", "--chunk-size", "256K", "--journal-commit-ms", "50",
                        "--bearer-token-env", "T", "-q"]
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLIRunner.executable)
            process.arguments = args
            process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
            process.environment = ["T": box.token]
            process.standardError = FileHandle.nullDevice
            try CLIRunner.spawn(process)
            killer.watch(process.processIdentifier)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
            let journal = try Data(contentsOf: URL(fileURLWithPath: dir.file("f.pdf.part.journal")))
            for secret in [box.token, "dl1x", "127.0.0.2", "Bearer"] {
                #expect(journal.range(of: Data(secret.utf8)) == nil, "the journal holds no \(secret)")
            }
            let issuedBefore = box.issuedDownloadURLs
            server.setHook { request in box.handle(request) }
            let resumed = try await CLIRunner.run(args, in: dir.path, environment: ["T": box.token])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            #expect(compareFile(dir.file("f.pdf"), with: box.currentVersion.content) == nil)
            #expect(box.issuedDownloadURLs > issuedBefore, "the resume asked the API for a new download URL")
            expectNoCredentialsOnSecondHost(server)
        }
    }

    @Test func verboseOutputRedactsSecrets() async throws {
        try await withCloud { _, box, _ in
            let dir = try TemporaryDirectory()
            try "BoxApi: shared_link=\(box.protectedLink)&shared_link_password=\(box.sharedLinkPassword)\n".write(
                toFile: dir.file("h.txt"), atomically: true, encoding: .utf8)
            let out = try await CLIRunner.run([box.url(), "-o", "f", "-v", "-c", "2", "--bearer-token-env", "T", "--header-file", "h.txt"],
                                        in: dir.path, environment: ["T": box.token])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(out.stderr.contains("> Authorization: Bearer ***"))
            #expect(out.stderr.contains("> BoxApi: ***"))
            #expect(out.stderr.contains("Location: http://127.0.0.2"), "redirect targets show their origin")
            for secret in [box.token, box.sharedLinkPassword, "/d/dl"] {
                #expect(!out.stderr.contains(secret), "\(secret) leaked into --verbose output")
            }
        }
    }

    // MARK: Backendless

    @Test func backendlessURLFormsAndNames() async throws {
        try await withCloud { server, _, backendless in
            let dir = try TemporaryDirectory()
            let report = backendless.files[0]
            let native = try await CLIRunner.run([backendless.nativeURL(report)], in: dir.path)
            #expect(native.status == 0, "\(native.stderr)")
            #expect(dir.contents == ["My report €.pdf"], "spaces and non-ASCII survive, decoded and sanitized")
            #expect(compareFile(dir.file("My report €.pdf"), with: report.content) == nil)

            let custom = try await CLIRunner.run([backendless.customDomainURL(report), "-o", "custom.pdf"], in: dir.path)
            #expect(custom.status == 0, "\(custom.stderr)")
            #expect(compareFile(dir.file("custom.pdf"), with: report.content) == nil)

            let banner = backendless.files[2]
            let web = try await CLIRunner.run([backendless.customDomainURL(banner, simplified: true)], in: dir.path)
            #expect(web.status == 0, "\(web.stderr)")
            #expect(compareFile(dir.file("Ünïcödé banner.png"), with: banner.content) == nil)
            _ = server
        }
    }

    @Test func backendlessProtectedFilesNeedTheUserToken() async throws {
        try await withCloud { server, _, backendless in
            let dir = try TemporaryDirectory()
            let secret = backendless.files[1]
            let denied = try await CLIRunner.run([backendless.nativeURL(secret)], in: dir.path)
            #expect(denied.status == 4, "\(denied.stderr)")
            #expect(!denied.stderr.contains(backendless.restAPIKey), "the REST API key in the URL is redacted")
            #expect(denied.stderr.contains("\"code\":4000") && denied.stderr.contains("User has no permissions to specified resource"))
            #expect(dir.contents.isEmpty, "a denied request leaves no output file")

            try "user-token: \(backendless.userToken)\n".write(toFile: dir.file("h.txt"), atomically: true, encoding: .utf8)
            let allowed = try await CLIRunner.run([backendless.nativeURL(secret), "-o", "s.xlsx", "--header-file", "h.txt"], in: dir.path)
            #expect(allowed.status == 0, "\(allowed.stderr)")
            #expect(compareFile(dir.file("s.xlsx"), with: secret.content) == nil)
            #expect(!allowed.stderr.contains(backendless.userToken))
            #expect(server.requests.filter { $0.header("user-token") != nil }.allSatisfy { $0.host == "127.0.0.1" })
        }
    }

    // MARK: TLS

    @Test func selfSignedHTTPSFailsByDefaultAndWorksWithCacert() async throws {
        let dir = try TemporaryDirectory()
        let generate = Process()
        generate.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        generate.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
                              "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"]
        generate.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        generate.standardError = FileHandle.nullDevice
        try CLIRunner.spawn(generate)
        generate.waitUntilExit()
        #expect(generate.terminationStatus == 0)
        let content = GeneratedContent(seed: 404, size: 300_000)
        try Data(content.bytes(0, content.size)).write(to: URL(fileURLWithPath: dir.file("file.bin")))

        // openssl's own TLS server (-WWW serves files from its directory, without byte ranges),
        // on a port the kernel just handed out as free.
        let port = try #require(CloudAPITests.freePort())
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        server.arguments = ["s_server", "-quiet", "-WWW", "-accept", "127.0.0.1:\(port)", "-cert", "cert.pem", "-key", "key.pem"]
        server.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try CLIRunner.spawn(server)
        // s_server ignores SIGTERM: stop it with SIGKILL.
        defer { Glibc.kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        var ready = false
        for _ in 0..<250 where server.isRunning {
            if CloudAPITests.canConnect(port: port) { ready = true; break }
            try await Task.sleep(for: .milliseconds(20))  // polling an external process's start-up
        }
        try #require(ready, "openssl s_server listens")
        let url = "https://127.0.0.1:\(port)/file.bin"
        let refused = try await CLIRunner.run([url, "-o", "a.bin", "--max-retries", "0"], in: dir.path)
        #expect(refused.status == 3 && refused.stderr.contains("certificate"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("a.bin")))
        // A CA file that holds no certificate (the key) is the argument's fault: exit 2.
        let unusable = try await CLIRunner.run([url, "-o", "d.bin", "--cacert", "key.pem", "--max-retries", "0"], in: dir.path)
        #expect(unusable.status == 2 && unusable.stderr.contains("--cacert"), "\(unusable.stderr)")
        let trusted = try await CLIRunner.run([url, "-o", "b.bin", "--cacert", "cert.pem"], in: dir.path)
        #expect(trusted.status == 0, "\(trusted.stderr)")
        #expect(compareFile(dir.file("b.bin"), with: content) == nil)
        for (flag, name) in [("--insecure", "c.bin"), ("-k", "e.bin")] {  // -k: curl's and wget2's spelling
            let insecure = try await CLIRunner.run([url, "-o", name, flag], in: dir.path)
            #expect(insecure.status == 0 && insecure.stderr.contains("warning: TLS certificate verification is off"), "\(flag)")
            #expect(compareFile(dir.file(name), with: content) == nil)
        }
    }

    /// A TCP port that is free right now (bound to port 0, then released).
    static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
