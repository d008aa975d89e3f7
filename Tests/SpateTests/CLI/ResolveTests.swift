import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `--resolve HOST:PORT:ADDRESS` and `-A/--user-agent`, as curl's. The name used is under
/// `.invalid` (RFC 6761: never resolves), so only `--resolve` can make the download work.
@Suite("Resolve and user agent")
struct ResolveTests {
    static let name = "spate-test.invalid"

    @Test func resolveConnectsToTheAddressAndKeepsTheName() async throws {
        // Listening on both addresses, one port: where each request arrived shows which
        // address spate connected to.
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            let content = GeneratedContent(seed: 180, size: 3 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let port = try #require(URLComponents(string: server.url("/f.bin", host: "127.0.0.2"))?.port)
            let url = "http://\(Self.name):\(port)/f.bin"
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([url, "-o", dir.file("f.bin"), "-c", "4", "--chunk-size", "1M", "--no-tuning",
                                               "--resolve", "\(Self.name):\(port):127.0.0.2", "-A", "dataset-fetcher/2.1"])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let requests = server.requests
            #expect(requests.count >= 4, "the probe and the ranges: \(requests.count)")
            #expect(requests.allSatisfy { $0.host == "127.0.0.2" }, "every connection went to the given address")
            #expect(requests.allSatisfy { $0.header("Host") == "\(Self.name):\(port)" }, "\(requests.map { $0.header("Host") ?? "-" })")
            #expect(requests.allSatisfy { $0.header("User-Agent") == "dataset-fetcher/2.1" })

            // Without it the name does not resolve: a network failure, nothing written.
            let unresolved = try await CLIRunner.run([url, "-o", dir.file("g.bin"), "--max-retries", "0"])
            #expect(unresolved.status == 3, "\(unresolved.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("g.bin")))
            // Another port of the same name is not covered by the entry.
            let otherPort = try await CLIRunner.run(["http://\(Self.name):\(port == 65535 ? 1 : port + 1)/f.bin", "-o", dir.file("h.bin"),
                                                     "--max-retries", "0", "--resolve", "\(Self.name):\(port):127.0.0.2"])
            #expect(otherPort.status == 3, "\(otherPort.stderr)")
        }
    }

    @Test func theDefaultUserAgentNamesSpate() async throws {
        try await withTestServer { server in
            server.addFile("/s.bin", TestServer.File(content: GeneratedContent(seed: 181, size: 1000)))
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([server.url("/s.bin"), "-o", dir.file("s.bin")])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(server.requests.allSatisfy { $0.header("User-Agent") == "spate/\(SpateVersion.string)" })
        }
    }

    @Test(arguments: [
        "nothing", "h:80", "h:0:127.0.0.1", "h:70000:127.0.0.1", "h:80:", "h:80:example.com", "h:80:::1",
        "h:80:127.0.0.1,", ":80:127.0.0.1", "h/x:80:127.0.0.1", "h:8o:127.0.0.1", "-h:80:127.0.0.1",
    ])
    func aBadResolveEntryIsAUsageError(entry: String) async throws {
        let out = try await CLIRunner.run(["http://\(Self.name)/f", "--resolve", entry, "-o", "/dev/null"])
        #expect(out.status == 2, "\(entry): \(out.stderr)")
        #expect(out.stderr.contains("--resolve") && out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
    }

    @Test func aUserAgentWithAControlCharacterIsAUsageError() async throws {
        let out = try await CLIRunner.run(["http://\(Self.name)/f", "-A", "a\r\nX-Injected: 1", "-o", "/dev/null"])
        #expect(out.status == 2, "\(out.stderr)")
        #expect(out.stderr.contains("user agent"), "\(out.stderr)")
    }

    @Test func helpAndReadmeDescribeThem() throws {
        let help = try CLITests.helpText()
        #expect(help.contains("--resolve <HOST:PORT:ADDRESS> Connect to ADDRESS for HOST on PORT instead of what DNS gives"), "\(help)")
        #expect(help.contains("-A, --user-agent <STRING> The User-Agent header to send (default: spate/VERSION)"), "\(help)")
        let readme = try CLITests.readme()
        #expect(readme.contains("| `--resolve HOST:PORT:ADDRESS` |") && readme.contains("| `-A, --user-agent STRING` |"))
    }

    @Test func entriesAreParsedAsCurlTakesThem() throws {
        let v6 = try ResolveOverride(parsing: "mirror.example:443:[::1],127.0.0.3")
        #expect(v6.host == "mirror.example" && v6.port == 443 && v6.addresses == ["::1", "127.0.0.3"])
        #expect(v6.curlEntry == "mirror.example:443:[::1],127.0.0.3")
    }
}
