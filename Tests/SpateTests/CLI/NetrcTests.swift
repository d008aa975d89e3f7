import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `-n/--netrc` and `--netrc-file` (curl's): each request logs in with what the file gives for
/// its own host, so a redirect to another host carries no credentials, and the password shows
/// nowhere.
@Suite("netrc")
struct NetrcTests {
    static let password = "s3cret-pw"
    /// `Authorization: Basic` for alice's password.
    static let basic = "Basic " + Data("alice:\(password)".utf8).base64EncodedString()

    /// 127.0.0.1 wants alice's password for /f.bin and redirects /moved to 127.0.0.2, which
    /// wants none.
    func withServer(_ body: (TestServer, GeneratedContent) async throws -> Void) async throws {
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            let content = GeneratedContent(seed: 171, size: 2 << 20)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            let target = server.url("/f.bin", host: "127.0.0.2")
            server.setHook { request in
                if request.path == "/moved" {
                    var plan = ResponsePlan(status: 302)
                    plan.setHeader("Location", target)
                    plan.setHeader("Content-Length", "0")
                    return plan
                }
                guard request.host == "127.0.0.1", request.header("authorization") != Self.basic else { return nil }
                var plan = ResponsePlan.text(401, "log in\n")
                plan.setHeader("WWW-Authenticate", "Basic realm=\"files\"")
                return plan
            }
            try await body(server, content)
        }
    }

    func netrc(_ dir: TemporaryDirectory) throws -> String {
        let path = dir.file("netrc")
        try "machine 127.0.0.1 login alice password \(Self.password)\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theFileGivesEachHostItsOwnLogin() async throws {
        try await withServer { server, content in
            let dir = try TemporaryDirectory()
            let netrc = try netrc(dir)
            let out = try await CLIRunner.run([server.url("/f.bin"), "-o", dir.file("f.bin"), "-c", "4", "--chunk-size", "512K",
                                         "--netrc-file", netrc, "-v", "--events", dir.file("events.ndjson")])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(server.requests.count >= 4 && server.requests.allSatisfy { $0.header("authorization") == Self.basic })
            let events = try String(contentsOfFile: dir.file("events.ndjson"), encoding: .utf8)
            for text in [out.stdout, out.stderr, events] {
                #expect(!text.contains(Self.password) && !text.contains(String(Self.basic.dropFirst(6))), "the password shows")
            }
            #expect(out.stderr.contains("> Authorization: Basic ***"), "the trace shows it redacted")

            // Without it: 401, exit 4.
            let denied = try await CLIRunner.run([server.url("/f.bin"), "-o", dir.file("g.bin"), "--max-retries", "0"])
            #expect(denied.status == 4, "\(denied.stderr)")
        }
    }

    /// Also when the file names the other host with a login and no password: the first
    /// host's password must not fill it in (CVE-2024-11053, curl's redirect-and-netrc leak).
    @Test(arguments: [false, true])
    func aRedirectToAnotherHostGetsNoLogin(secondHostWithoutPassword: Bool) async throws {
        try await withServer { server, content in
            let dir = try TemporaryDirectory()
            let file = try netrc(dir)
            if secondHostWithoutPassword {
                try ("machine 127.0.0.1 login alice password \(Self.password)\nmachine 127.0.0.2 login bob\n")
                    .write(toFile: file, atomically: true, encoding: .utf8)
            }
            let out = try await CLIRunner.run([server.url("/moved"), "-o", dir.file("f.bin"), "--netrc-file", file])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let second = server.requests.filter { $0.host == "127.0.0.2" }
            #expect(!second.isEmpty)
            for request in second {
                let sent = request.header("authorization").flatMap { Data(base64Encoded: String($0.dropFirst(6))) }
                    .map { String(decoding: $0, as: UTF8.self) }
                #expect(request.header("authorization") == nil || !(sent ?? "").contains(Self.password), "\(sent ?? "")")
            }
            #expect(server.requests.first { $0.host == "127.0.0.1" }?.header("authorization") == Self.basic)
        }
    }

    @Test func aMissingFileIsAUsageError() throws {
        let dir = try TemporaryDirectory()
        let out = try CLIRunner.run(["http://127.0.0.1:9/f.bin", "-o", dir.file("f"), "--netrc-file", dir.file("none")])
        #expect(out.status == 2 && out.stderr.contains("--netrc-file") && out.stderr.contains("No such file"), "\(out.stderr)")
        let noHome = try CLIRunner.run(["http://127.0.0.1:9/f.bin", "-o", dir.file("f"), "-n"], environment: ["HOME": dir.path])
        #expect(noHome.status == 2 && noHome.stderr.contains(dir.path + "/.netrc"), "\(noHome.stderr)")
        let help = try CLITests.helpText()
        #expect(help.contains("-n, --netrc Log in with the user name and password ~/.netrc gives for the host"), "\(help)")
        let readme = try CLITests.readme()
        #expect(readme.contains("| `-n, --netrc`, `--netrc-file PATH` |"))
    }
}
