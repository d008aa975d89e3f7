import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// `--trace` (issue 13): valid Chrome trace-event JSON, one span per request the server saw,
/// instants for what the scheduler did, and no secret.
@Suite("CLI trace", .timeLimit(.minutes(5)))
struct TraceCLITests {
    func load(_ path: String) throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        return object?["traceEvents"] as? [[String: Any]] ?? []
    }

    func expectSchema(_ events: [[String: Any]], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!events.isEmpty, sourceLocation: sourceLocation)
        for event in events {
            #expect(event["name"] is String && event["ph"] is String && event["ts"] is NSNumber
                    && event["pid"] is NSNumber && event["tid"] is NSNumber, "\(event)", sourceLocation: sourceLocation)
            if event["ph"] as? String == "X" { #expect(event["dur"] is NSNumber, sourceLocation: sourceLocation) }
        }
    }

    @Test func aDownloadWithAFailureTracesEveryRequestAndTheRetry() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9601, size: 6 << 20)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            let count = Atomic<Int>(0)
            server.setHook { request in
                guard let range = request.header("range"), range != "bytes=0-0" else { return nil }
                return count.add(1, ordering: .relaxed).newValue == 3 ? Fault.closeAfter(bytes: 10_000).apply(to: request, file: file) : nil
            }
            let out = try await CLIRunner.run([server.url("/f.bin") + "?sig=SECRET", "-o", "f.bin", "-c", "4", "--chunk-size", "512K",
                                         "--trace", "trace.json", "-q", "-H", "Authorization: Bearer TOKEN"], in: dir.path)
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let events = try load(dir.file("trace.json"))
            expectSchema(events)
            let spans = events.filter { $0["ph"] as? String == "X" }
            #expect(spans.count == server.requests.count, "\(spans.count) spans, \(server.requests.count) requests")
            // Every range the server saw has its span.
            let ranges = Set(server.requests.compactMap { $0.header("range") })
            let traced = Set(spans.compactMap { ($0["args"] as? [String: Any])?["range"] as? String })
            #expect(ranges == traced)
            #expect(events.contains { $0["name"] as? String == "retry" && $0["ph"] as? String == "i" })
            // Lanes are named, one per connection.
            let lanes = Set(spans.compactMap { ($0["tid"] as? NSNumber)?.intValue })
            let named = events.filter { $0["name"] as? String == "thread_name" }.compactMap { ($0["tid"] as? NSNumber)?.intValue }
            #expect(lanes.isSubset(of: Set(named)) && !lanes.isEmpty)
            let text = try String(contentsOfFile: dir.file("trace.json"), encoding: .utf8)
            #expect(!text.contains("SECRET") && !text.contains("TOKEN"))
        }
    }

    @Test func aFailedDownloadStillWritesItsTrace() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let out = try await CLIRunner.run([server.url("/missing.bin"), "-o", "f.bin", "--trace", "trace.json", "-q"], in: dir.path)
            #expect(out.status == 4)
            let events = try load(dir.file("trace.json"))
            expectSchema(events)
            #expect(events.filter { $0["ph"] as? String == "X" }.count == server.requests.count)
        }
    }
}
