import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `spate bench` (issue 13): a sweep into nothing, its JSON and its SVG chart.
@Suite("CLI bench", .timeLimit(.minutes(5)))
struct BenchCLITests {
    /// What cannot be measured or written is said before the sweep, or at its first run:
    /// an unwritable chart path sends nothing; an empty file has no rate to report.
    @Test func refusesWhatItCannotMeasureOrWrite() async throws {
        try await withTestServer { server in
            let chart = try await CLIRunner.run(["bench", server.url("/gen/1M"), "--chart", "/nonexistent-dir/x.svg"])
            #expect(chart.status == 6 && chart.stderr.contains("cannot write the chart"), "\(chart.stderr)")
            #expect(server.requests.isEmpty)
            let empty = try await CLIRunner.run(["bench", server.url("/gen/0"), "--connections", "1", "--repeat", "1", "--json"])
            #expect(empty.status == 2 && empty.stderr.contains("is empty"), "\(empty.stderr)")
            #expect(empty.stdout.isEmpty)
        }
    }

    @Test func aSweepReportsEverySettingAsJSONAndDrawsTheChart() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9501, size: 4 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let out = try await CLIRunner.run(["bench", server.url("/f.bin"), "--connections", "1,2,4", "--chunk-sizes", "auto,256K",
                                         "--repeat", "2", "--json", "--chart", "chart.svg", "-H", "X-Bench: yes"], in: dir.path)
            #expect(out.status == 0, "\(out.stderr)")
            let rows = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]]
            #expect(rows?.count == 7, "3 counts × 2 sizes + the default: \(out.stdout)")
            for row in rows ?? [] {
                for key in ["connections", "chunk_bytes", "bytes_per_second", "ttfb_seconds", "cpu_seconds_per_gib", "retries"] {
                    #expect(row.keys.contains(key), "missing \(key) in \(row)")
                }
                #expect(((row["bytes_per_second"] as? Double) ?? 0) > 0)
                #expect(((row["ttfb_seconds"] as? Double) ?? -1) >= 0)
            }
            #expect(rows?.filter { $0["default"] as? Bool == true }.count == 1)
            #expect(Set(rows?.compactMap { $0["connections"] as? Int } ?? []) == [1, 2, 4])
            #expect(Set(rows?.compactMap { $0["chunk_bytes"] as? Int } ?? []) == [256 << 10])
            #expect(out.stderr.contains("best: "), "\(out.stderr)")
            // Every run downloaded the whole file: (7 settings × 2 runs) × 4 MiB served.
            let served = server.servedBytesByPath()["/f.bin"] ?? 0
            #expect(served >= 14 * content.size, "\(served) bytes served")
            // The download options apply: the header went with every request.
            #expect(server.requests.allSatisfy { $0.header("x-bench") == "yes" })
            let svg = try String(contentsOfFile: dir.file("chart.svg"), encoding: .utf8)
            #expect(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.contains("connections"))
            #expect(svg.components(separatedBy: "<polyline").count - 1 == 2, "one line per request size")
            #expect(dir.contents == ["chart.svg"], "nothing else written: \(dir.contents)")
        }
    }

    @Test("bench options are checked", arguments: [
        (["bench"], "USAGE: spate bench"),
        (["bench", "URL", "--connections", "0,2"], "invalid --connections"),
        (["bench", "URL", "--chunk-sizes", "1K"], "invalid --chunk-sizes"),
        (["bench", "URL", "--repeat", "0"], "--repeat must be between"),
        (["bench", "URL", "-o", "x.bin"], "-o is not a bench option"),
        (["bench", "URL", "URL"], "bench takes one URL"),
    ] as [([String], String)])
    func benchOptionsAreChecked(arguments: [String], message: String) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let out = try await CLIRunner.run(arguments.map { $0 == "URL" ? server.url("/gen/1M") : $0 }, in: dir.path)
            #expect(out.status == 2, "\(out.stderr)")
            #expect((out.stderr + out.stdout).contains(message), "\(out.stderr)")
            #expect(server.requests.isEmpty)
        }
    }
}
