import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Byte-exact downloads from the real loopback server through libcurl.
@Suite("Downloads")
struct DownloadTests {
    static let chunk: Int64 = 64 * 1024

    static let sizes: [(Int64, Int64?)] = [
        (0, chunk), (1, chunk), (chunk - 1, chunk), (chunk, chunk), (chunk + 1, chunk),
        (1_000_003, chunk),  // a prime
        (64 << 20, nil),     // 64 MiB, automatic request size
    ]

    @Test("sizes", arguments: sizes)
    func downloadsEverySize(size: Int64, chunk: Int64?) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: UInt64(size) &+ 11, size: size)
            server.addFile("/f.bin", TestServer.File(content: content))
            let out = dir.file("f.bin")
            let result = try await download(server.url("/f.bin"), to: out, options: testOptions(connections: 4, chunk: chunk)).get()
            #expect(compareFile(out, with: content) == nil)
            #expect(result.bytes == size)
            #expect(dir.contents == ["f.bin"], "no partial file is left behind")
        }
    }

    @Test("connections", arguments: [1, 2, 7, 16, 32])
    func downloadsWithConnections(connections: Int) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: UInt64(connections), size: (8 << 20) + 13)
            server.addFile("/f.bin", TestServer.File(content: content))
            let out = dir.file("f.bin")
            var options = testOptions(connections: connections, chunk: 256 * 1024)
            options.selfTuning = false  // exactly -c N
            // Exactly one request per chunk: idle connections would otherwise steal from or
            // hedge the last requests, adding requests whenever timing allows (32 connections,
            // 33 chunks). Stealing and hedging have their own tests.
            options.workStealing = false
            options.tailHedging = false
            let result = try await download(server.url("/f.bin"), to: out, options: options).get()
            #expect(compareFile(out, with: content) == nil)
            #expect(result.connections == connections)
            let ranged = server.requests.filter { $0.header("range") != nil && $0.header("range") != "bytes=0-0" }
            #expect(ranged.count == 33, "8 MiB + 13 bytes in 256 KiB requests")
            let connectionIDs = Set(ranged.map(\.connectionID))
            #expect(connectionIDs.count <= connections + 1, "at most -c connections (plus the probe's)")
            if connections < 33 {
                #expect(ranged.contains { $0.connectionRequestIndex > 1 }, "connections are reused (keep-alive)")
            }
            for request in ranged {
                #expect(request.header("accept-encoding") == "identity")
                #expect(request.header("if-range") == content.etag)
            }
        }
    }

    @Test func serverWithoutRangeSupportGivesASingleStreamAndANotice() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 7, size: 3 << 20)
            var file = TestServer.File(content: content)
            file.acceptsRanges = false
            server.addFile("/f.bin", file)
            let out = dir.file("f.bin")
            let d = try Download(url: server.url("/f.bin"), to: out, options: testOptions(connections: 8, chunk: 65536))
            async let result = d.run()
            var notices: [String] = []
            for await event in d.events { if case .notice(let text) = event { notices.append(text) } }
            let r = try await result
            #expect(compareFile(out, with: content) == nil)
            #expect(r.connections == 1)
            #expect(notices.contains { $0.contains("does not support byte ranges") })
            #expect(server.requests.count == 1, "the probe's reply is the stream: no second request")
        }
    }

    @Test func checksumMatchIsReported() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 99, size: 5_000_000)
            server.addFile("/f.bin", TestServer.File(content: content))
            var options = testOptions(connections: 5, chunk: 300_000)
            let checksum = sha256Checksum(of: content)
            options.checksum = checksum
            let result = try await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options).get()
            #expect(result.verifiedChecksum == checksum)
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        }
    }

    @Test(arguments: [DigestAlgorithm.sha256, .sha512, .sha1, .md5])
    func checksumMismatchLeavesNoFile(algorithm: DigestAlgorithm) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 5, size: 1_234_567)
            server.addFile("/f.bin", TestServer.File(content: content))
            var options = testOptions(connections: 3, chunk: 200_000)
            let wrong = try Checksum(algorithm: algorithm, digest: [UInt8](repeating: 0xAB, count: algorithm.byteCount))
            options.checksum = wrong
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options)
            guard case .failure(let error) = result else { Issue.record("a wrong checksum must fail"); return }
            #expect(error.kind == .checksumMismatch)
            #expect(error.message.contains(wrong.hex), "names the expected digest")
            #expect(error.message.contains("got \(algorithm.rawValue):"), "names the actual digest")
            #expect(dir.contents.isEmpty, "no final file and no partial file")
        }
    }

    @Test func checksumOfAnEmptyFile() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            server.addFile("/empty", TestServer.File(content: GeneratedContent(seed: 1, size: 0)))
            var options = testOptions()
            options.checksum = try Checksum(parsing: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            let result = try await download(server.url("/empty"), to: dir.file("e"), options: options).get()
            #expect(result.bytes == 0)
            #expect(try FileManager.default.attributesOfItem(atPath: dir.file("e"))[.size] as? Int == 0)
        }
    }

    @Test func notFoundIsAnHTTPErrorWithNoFile() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let result = await download(server.url("/missing"), to: dir.file("m"), options: testOptions())
            guard case .failure(let error) = result else { Issue.record("404 must fail"); return }
            #expect(error.kind == .http && error.httpStatus == 404)
            #expect(error.message.contains("404 Not Found"))
            #expect(server.requests.count == 1, "a 404 is not retried")
            #expect(dir.contents.isEmpty)
        }
    }

    @Test func existingOutputIsNeverOverwrittenWithoutForce() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 3, size: 100_000)
            server.addFile("/f.bin", TestServer.File(content: content))
            let out = dir.file("f.bin")
            try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
            let refused = await download(server.url("/f.bin"), to: out, options: testOptions())
            guard case .failure(let error) = refused else { Issue.record("must refuse"); return }
            #expect(error.kind == .localIO)
            #expect(server.requests.isEmpty, "refused before any traffic")
            #expect(try String(contentsOfFile: out, encoding: .utf8) == "precious")
            var force = testOptions()
            force.overwrite = true
            _ = try await download(server.url("/f.bin"), to: out, options: force).get()
            #expect(compareFile(out, with: content) == nil)
        }
    }

    @Test func aPlantedSymlinkAtThePartialNameIsNotFollowed() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            server.addFile("/f.bin", TestServer.File(content: GeneratedContent(seed: 3, size: 1000)))
            let victim = dir.file("victim")
            try Data("keep".utf8).write(to: URL(fileURLWithPath: victim))
            try FileManager.default.createSymbolicLink(atPath: dir.file("f.bin.part"), withDestinationPath: victim)
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: testOptions())
            guard case .failure(let error) = result else { Issue.record("must refuse"); return }
            #expect(error.kind == .localIO)
            #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep")
        }
    }
}
