import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// The library API as README shows it: options, an AsyncSequence of events, task cancellation.
@Suite("Library API")
struct LibraryAPITests {
    /// Mirrors the README example line for line (only the URL and path differ).
    @Test func readmeExample() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 2026, size: 20 << 20)
            server.addFile("/big.iso", TestServer.File(content: content))
            let expectedHex = sha256Checksum(of: content).hex

            // --- README example begins ---
            var options = DownloadOptions()
            options.connections = 8
            options.checksum = try Checksum(parsing: "sha256:\(expectedHex)")
            let download = try Download(url: server.url("/big.iso"), to: dir.file("big.iso"), options: options)
            async let result = download.run()
            var lastProgress: DownloadProgress?
            var sawStart = false, sawFinish = false
            for await event in download.events {
                switch event {
                case .started(let plan): sawStart = plan.totalBytes == content.size
                case .progress(let progress): lastProgress = progress
                case .finished: sawFinish = true
                default: break
                }
            }
            let summary = try await result
            // --- README example ends ---

            #expect(sawStart && sawFinish)
            #expect(summary.bytes == content.size)
            #expect(summary.verifiedChecksum?.hex == expectedHex)
            if let lastProgress { #expect(lastProgress.bytesDone <= content.size) }
            #expect(compareFile(dir.file("big.iso"), with: content) == nil)
        }
    }

    @Test(arguments: [true, false])
    func cancellingTheTaskStopsTheDownload(journal: Bool) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 1, size: 50 << 20)
            server.addFile("/slow.bin", TestServer.File(content: content))
            server.setHook { request in
                guard request.header("range") != "bytes=0-0" else { return nil }
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 512 * 1024
                return plan
            }
            var options = testOptions(connections: 2)
            options.journal = journal
            let d = try Download(url: server.url("/slow.bin"), to: dir.file("slow.bin"), options: options)
            let task = Task { try await d.run() }
            // Wait until bytes are flowing (driven by the download's own events, not a timer).
            for await event in d.events {
                if case .progress(let p) = event, p.bytesDone > 0 { break }
            }
            task.cancel()
            do {
                _ = try await task.value
                Issue.record("a cancelled download must not succeed")
            } catch let error as SpateError {
                #expect(error.kind == .cancelled)
            }
            if journal {
                #expect(dir.contents == ["slow.bin.part", "slow.bin.part.journal"], "kept for a resume; no final file")
            } else {
                #expect(dir.contents.isEmpty, "no final and no partial file after cancellation")
            }
        }
    }
}
