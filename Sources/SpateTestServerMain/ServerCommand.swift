import ArgumentParser
import Glibc
import Spate
import SpateTestContent
import SpateTestServer

/// `spate-test-server`: the programmable loopback server, standalone (for the demo, manual
/// testing and benchmarks). Prints one URL per host on stdout, then serves until killed or
/// until its standard input closes (so a parent that dies never leaves it running).
@main
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spate-test-server",
        abstract: "Serve deterministic generated files over HTTP/1.1 on loopback.",
        discussion: """
            Any size is served at /gen/SIZE[/NAME]?seed=N (SIZE like 1048576, 64M, 1G).
            --file adds a named file: --file /data.bin:1G:42 serves 1 GiB of seed 42 at /data.bin.
            """)

    @Option(name: .customLong("host"), help: "Address to listen on (repeatable).")
    var hosts: [String] = ["127.0.0.1"]

    @Option(help: "Port (0 picks a free one).")
    var port: Int = 8080

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    @Option(name: .customLong("file"), help: "PATH:SIZE[:SEED] to serve (repeatable).")
    var files: [String] = []

    @Flag(help: "Ignore Range headers (answer 200 with the whole body).")
    var noRanges = false

    @Option(help: "Pace every reply body at this many bytes per second (e.g. 20M).")
    var rate: String?

    @Option(help: "Hold every reply this many milliseconds after its request: a round trip (the loopback has none).")
    var latency: Int = 0

    @Option(help: "Answer 429 to a request that arrives while more than this many requests to the host are being served (a per-client cap, as nginx's limit_conn counts).")
    var maxConnections: Int?

    @Flag(help: "Emulate Box and Backendless file downloads (needs --host 127.0.0.1 --host 127.0.0.2); prints example commands.")
    var emulateCloud = false

    @Flag(help: "Exit when standard input reaches end of file.")
    var exitOnStdinEOF = false

    mutating func run() async throws {
        let server = try await TestServer.start(hosts: hosts, port: port, threads: max(1, threads))
        var paths: [String] = []
        for spec in files {
            let parts = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 2, parts[0].hasPrefix("/"), let size = ByteSize.parse(parts[1]) else {
                throw ValidationError("--file expects PATH:SIZE[:SEED], got \(spec)")
            }
            let seed = parts.count > 2 ? UInt64(parts[2]) ?? 1 : 1
            var file = TestServer.File(content: GeneratedContent(seed: seed, size: size))
            file.acceptsRanges = !noRanges
            server.addFile(parts[0], file)
            paths.append(parts[0])
        }
        var bytesPerSecond: Int?
        if let rate {
            guard let parsed = ByteSize.parse(rate), parsed > 0 else {
                throw ValidationError("--rate expects a size per second like 20M")
            }
            bytesPerSecond = Int(parsed)
        }
        guard latency >= 0 else { throw ValidationError("--latency expects milliseconds, 0 or more") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections expects 1 or more") }
        if bytesPerSecond != nil || latency > 0 || maxConnections != nil || noRanges {
            let delay: Duration? = latency > 0 ? .milliseconds(latency) : nil
            let cap = maxConnections
            let pace = bytesPerSecond
            let ignoresRanges = noRanges
            server.setHook { request in
                // --no-ranges covers /gen/ too, not only --file paths: the Range header is dropped.
                var plan = server.standardPlan(for: ignoresRanges ? RequestInfo(copying: request, withoutHeader: "range") : request)
                if ignoresRanges { plan.setHeader("Accept-Ranges", "none") }
                if let cap, request.concurrentRequestsOnHost > cap {
                    plan = .text(429, "too many connections\n")
                    plan.setHeader("Retry-After", "1")
                } else {
                    plan.bytesPerSecond = pace
                }
                plan.firstByteDelay = delay
                return plan
            }
        }
        if emulateCloud {
            guard hosts.count >= 2 else { throw ValidationError("--emulate-cloud needs two hosts: --host 127.0.0.1 --host 127.0.0.2") }
            let box = BoxEmulation(server: server, downloadHost: hosts[1], notReadyReplies: 1, usesPerDownloadURL: 8)
            let backendless = BackendlessEmulation(server: server, customDomainHost: hosts[1])
            server.emulateCloudAPIs(box: box, backendless: backendless)
            print("""
                # Box (API on \(hosts[0]), download URLs on \(hosts[1]); the first request gets 202 + Retry-After)
                export BOX_TOKEN=\(box.token)
                spate '\(box.url())' --bearer-token-env BOX_TOKEN
                spate '\(box.url(version: box.versions[0].id))' --bearer-token-env BOX_TOKEN -o v1.pdf
                printf 'BoxApi: shared_link=%s&shared_link_password=%s\\n' '\(box.protectedLink)' '\(box.sharedLinkPassword)' > box-headers.txt
                spate '\(box.url())' --bearer-token-env BOX_TOKEN --header-file box-headers.txt -J
                # Backendless (native URLs on \(hosts[0]), the custom domain on \(hosts[1]))
                spate '\(backendless.nativeURL(backendless.files[0]))'
                printf 'user-token: %s\\n' '\(backendless.userToken)' > backendless-headers.txt
                spate '\(backendless.nativeURL(backendless.files[1]))' --header-file backendless-headers.txt
                spate '\(backendless.customDomainURL(backendless.files[2], simplified: true))'
                """)
        } else {
            for host in hosts {
                for path in paths.isEmpty ? ["/gen/1G"] : paths {
                    print(server.url(path, host: host))
                }
            }
        }
        fflush(nil)
        if exitOnStdinEOF {
            var byte: UInt8 = 0
            while read(0, &byte, 1) > 0 {}
            await server.stop()
            return
        }
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}
