import Foundation
import Glibc
@testable import Spate
import SpateTestContent
import Testing

/// `--http2` against nginx over TLS with h2 (the test server speaks HTTP/1.1 only): ranges go
/// as HTTP/2 streams, the file is exact, and without the flag every request is HTTP/1.1.
/// nginx paces every request (`limit_rate`), so streams overlap on a connection; libcurl 7.88
/// broke exactly there when it reused an easy handle (a header line of another stream).
@Suite("HTTP/2", .timeLimit(.minutes(5)))
struct HTTP2Tests {
    @Test func rangesGoAsHTTP2StreamsOnlyWhenAsked() async throws {
        let dir = try TemporaryDirectory()
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                             "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
                             "-addext", "subjectAltName=IP:127.0.0.1"]
        openssl.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        openssl.standardError = FileHandle.nullDevice
        try CLIRunner.spawn(openssl)
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0)
        let content = GeneratedContent(seed: 1402, size: 4 << 20)
        try FileManager.default.createDirectory(atPath: dir.file("www"), withIntermediateDirectories: true)
        try Data(content.bytes(0, content.size)).write(to: URL(fileURLWithPath: dir.file("www/f.bin")))
        let port = try #require(CloudAPITests.freePort())
        // One process, no master (it runs as this user and stops with it); the access log says
        // which protocol every request used. Its error log is a FIFO read at `notice`: nginx
        // names its version there once its listening sockets are bound (`ngx_os_status`, after
        // `ngx_init_cycle`), which is the signal that it accepts connections.
        let logFIFO = dir.file("error.fifo")
        try #require(mkfifo(logFIFO, 0o600) == 0)
        let log = open(logFIFO, O_RDWR | O_CLOEXEC)  // read-write: the open never waits for nginx
        try #require(log >= 0)
        defer { close(log) }  // runs after the kill below (defers run last-declared first)
        let conf = """
            daemon off; master_process off; worker_processes 1; pid \(dir.file("nginx.pid"));
            error_log \(logFIFO) notice;
            events { worker_connections 256; }
            http {
                log_format p '$server_protocol $status $http_range';
                access_log \(dir.file("access.log")) p;
                types { } default_type application/octet-stream;
                ssl_certificate \(dir.file("cert.pem")); ssl_certificate_key \(dir.file("key.pem"));
                server { listen 127.0.0.1:\(port) ssl http2; root \(dir.file("www")); limit_rate 4m; }
            }
            """
        try conf.write(toFile: dir.file("nginx.conf"), atomically: true, encoding: .utf8)
        let nginx = Process()
        nginx.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        nginx.arguments = ["-c", dir.file("nginx.conf"), "-e", logFIFO]
        // None of the test process's descriptors: an nginx orphaned by a crash of this process
        // must not hold `swift test`'s output pipe (which then waits for it forever).
        nginx.standardOutput = FileHandle.nullDevice
        nginx.standardError = FileHandle.nullDevice
        nginx.standardInput = FileHandle.nullDevice
        try CLIRunner.spawn(nginx)
        defer { Glibc.kill(nginx.processIdentifier, SIGKILL); nginx.waitUntilExit() }
        let started = Self.read(log, until: "nginx/")
        try #require(started.contains("nginx/"), "nginx did not start: \(started)")
        let url = "https://127.0.0.1:\(port)/f.bin"
        let common = ["--cacert", "cert.pem", "-c", "4", "--chunk-size", "256K", "--no-tuning"]

        func protocols() throws -> [Substring] {
            let log = try String(contentsOfFile: dir.file("access.log"), encoding: .utf8)
            try "".write(toFile: dir.file("access.log"), atomically: false, encoding: .utf8)
            return log.split(separator: "\n").map { $0.prefix { $0 != " " } }
        }
        // No retries: a stream that fails is a failure here, not a wait.
        let h2 = try await CLIRunner.run([url, "-o", "a.bin", "--http2", "--max-retries", "0"] + common, in: dir.path)
        #expect(h2.status == 0, "\(h2.stderr)")
        #expect(compareFile(dir.file("a.bin"), with: content) == nil)
        let asH2 = try protocols()
        #expect(asH2.count > 8 && asH2.allSatisfy { $0 == "HTTP/2.0" }, "\(asH2)")
        let h1 = try await CLIRunner.run([url, "-o", "b.bin"] + common, in: dir.path)
        #expect(h1.status == 0, "\(h1.stderr)")
        #expect(compareFile(dir.file("b.bin"), with: content) == nil)
        let asH1 = try protocols()
        #expect(asH1.count > 8 && asH1.allSatisfy { $0 == "HTTP/1.1" }, "\(asH1)")
    }

    /// What arrives on `fd` until it holds `marker`, or whatever came when nothing more
    /// arrives for a minute (the bound only ends a broken run; it times nothing).
    static func read(_ fd: Int32, until marker: String) -> String {
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !text.contains(marker) {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 60_000) == 1 else { break }
            let n = Glibc.read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        return text
    }
}
