import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Proxies (`-x/--proxy`, `--noproxy`, and libcurl's environment variables). The test server
/// listens on 127.0.0.1 and 127.0.0.2 and answers an absolute-form request target (what a
/// client sends to an HTTP proxy) as the proxy would, serving the origin's file: so where each
/// request arrived, and which origin it named, shows the route the client took.
@Suite("Proxies")
struct ProxyTests {
    static let size: Int64 = 3 << 20

    /// Downloads 127.0.0.2's /f.bin with `arguments` and `environment`; returns the requests the
    /// server saw (the probe included) after checking the file.
    func download(_ server: TestServer, _ content: GeneratedContent, arguments: [String],
                  environment: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> [RequestInfo] {
        let dir = try TemporaryDirectory()
        let out = try CLIRunner.run([server.url("/f.bin", host: "127.0.0.2"), "-o", dir.file("f.bin"), "-c", "4",
                                     "--chunk-size", "1M", "--no-tuning"] + arguments, environment: environment)
        #expect(out.status == 0, "\(out.stderr)", sourceLocation: sourceLocation)
        #expect(compareFile(dir.file("f.bin"), with: content) == nil, sourceLocation: sourceLocation)
        return server.requests
    }

    /// `http://HOST:PORT` of the server on `host` (a proxy URL, or the origin a proxied request names).
    func base(_ server: TestServer, _ host: String) -> String { String(server.url("/", host: host).dropLast()) }

    func withServer(_ body: (TestServer, GeneratedContent) async throws -> Void) async throws {
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            let content = GeneratedContent(seed: 170, size: Self.size)
            server.addFile("/f.bin", TestServer.File(content: content))
            try await body(server, content)
        }
    }

    @Test func everyRequestGoesThroughTheProxy() async throws {
        try await withServer { server, content in
            let proxy = base(server, "127.0.0.1")
            let requests = try download(server, content, arguments: ["--proxy", proxy])
            #expect(requests.count >= 4, "the probe and the ranges: \(requests.count)")
            #expect(requests.allSatisfy { $0.host == "127.0.0.1" }, "every connection is to the proxy")
            let origin = base(server, "127.0.0.2")
            #expect(requests.allSatisfy { $0.proxiedOrigin == origin }, "\(requests.map { $0.proxiedOrigin ?? "origin-form" })")
        }
    }

    @Test func noproxyAndAnEmptyProxyGoStraightToTheHost() async throws {
        try await withServer { server, content in
            let proxy = base(server, "127.0.0.1")
            let bypassed = try download(server, content, arguments: ["--proxy", proxy, "--noproxy", "127.0.0.2"])
            #expect(bypassed.allSatisfy { $0.host == "127.0.0.2" && $0.proxiedOrigin == nil })
        }
        try await withServer { server, content in
            let proxy = base(server, "127.0.0.1")
            // libcurl's environment variable, turned off by `--proxy ""` (as curl's).
            let off = try download(server, content, arguments: ["--proxy", ""], environment: ["http_proxy": proxy])
            #expect(off.allSatisfy { $0.host == "127.0.0.2" && $0.proxiedOrigin == nil })
        }
        try await withServer { server, content in
            let proxy = base(server, "127.0.0.1")
            let fromEnvironment = try download(server, content, arguments: [], environment: ["http_proxy": proxy])
            #expect(fromEnvironment.allSatisfy { $0.host == "127.0.0.1" && $0.proxiedOrigin != nil })
        }
    }

    /// A proxy variable's credentials (libcurl reads them, and `-v` shows the variable) are
    /// redacted in the trace, with or without a scheme in the value.
    @Test(arguments: [true, false])
    func aProxyVariablesPasswordIsNotTraced(withScheme: Bool) async throws {
        try await withServer { server, content in
            let proxy = base(server, "127.0.0.1")
            let value = withScheme ? proxy.replacingOccurrences(of: "http://", with: "http://alice:pw-secret@")
                                   : "alice:pw-secret@" + proxy.dropFirst("http://".count)
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([server.url("/f.bin", host: "127.0.0.2"), "-o", dir.file("f.bin"), "-v", "-c", "1"],
                                              environment: ["http_proxy": value])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(server.requests.allSatisfy { $0.host == "127.0.0.1" && $0.proxiedOrigin != nil }, "through the proxy")
            #expect(!out.stderr.contains("pw-secret"), "\(out.stderr)")
            #expect(out.stderr.contains("Proxy-Authorization: Basic ***") || !out.stderr.contains("Proxy-Authorization"), "\(out.stderr)")
        }
    }

    /// Credentials never go in argv (others can read it): refused with one line that does
    /// not repeat them, before anything is sent; so are schemes libcurl cannot speak to a proxy.
    @Test(arguments: [
        ("http://user:hunter2@127.0.0.1:9", "environment variable"),
        ("hunter2@127.0.0.1:9", "environment variable"),
        ("ftp://127.0.0.1:9", "unsupported proxy scheme ftp://"),
        ("http://", "no proxy host"),
        ("http://127.0.0.1:9 x", "space or a control character"),
    ])
    func badProxyArgumentsAreRefused(proxy: String, message: String) throws {
        let out = try CLIRunner.run(["http://127.0.0.1:9/f.bin", "-o", "/dev/null", "--proxy", proxy])
        #expect(out.status == 2, "\(out.stderr)")
        #expect(out.stderr.contains(message), "\(out.stderr)")
        #expect(!out.stderr.contains("hunter2"))
        #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
    }

    @Test func helpAndReadmeSayHowProxiesAreChosen() throws {
        let help = try CLITests.helpText()
        #expect(help.contains("-x, --proxy <URL> Send every request through this proxy") && help.contains("--noproxy <LIST>"), "\(help)")
        let readme = try CLITests.readme()
        #expect(readme.contains("| `-x, --proxy URL` |") && readme.contains("| `--noproxy LIST` |"))
    }
}
