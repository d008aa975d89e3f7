import Foundation
import Glibc
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// A fresh private directory for one test, removed at the end.
final class TemporaryDirectory: @unchecked Sendable {
    let path: String

    init() throws {
        var template = Array("\(NSTemporaryDirectory())spate-test-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Names in the directory (to check that no partial or stray files are left).
    var contents: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path).sorted()) ?? [] }
}

/// Compares a downloaded file with the generated content it should hold, byte for byte.
/// Returns a description of the first difference, or nil when identical.
func compareFile(_ path: String, with content: GeneratedContent) -> String? {
    content.differences(inFileAt: path)
}

/// The SHA-256 of generated content.
func sha256Checksum(of content: GeneratedContent) -> Checksum {
    try! Checksum(algorithm: .sha256, digest: content.digest(.sha256))
}

/// Starts a test server, runs `body`, stops the server.
func withTestServer<T>(hosts: [String] = ["127.0.0.1"], _ body: (TestServer) async throws -> T) async throws -> T {
    let server = try await TestServer.start(hosts: hosts)
    do {
        let result = try await body(server)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}

/// Options for fast, deterministic tests: short retry waits.
func testOptions(connections: Int = 4, chunk: Int64? = nil) -> DownloadOptions {
    var options = DownloadOptions()
    options.connections = connections
    options.chunkBytes = chunk
    options.retry = RetryPolicy(maxRetries: 3, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))
    options.progressInterval = .milliseconds(50)
    return options
}

/// Runs a download and returns its result, or the error it threw.
func download(_ url: String, to path: String, options: DownloadOptions) async -> Result<DownloadResult, SpateError> {
    do {
        let d = try Download(url: url, to: path, options: options)
        return .success(try await d.run())
    } catch {
        return .failure(error)
    }
}

/// Runs a download and returns its result, or the error it threw, with every notice it gave.
func downloadNoticing(_ url: String, to path: String, options: DownloadOptions) async -> (Result<DownloadResult, SpateError>, [String]) {
    let d: Download
    do {
        d = try Download(url: url, to: path, options: options)
    } catch {
        return (.failure(error), [])
    }
    async let result: Result<DownloadResult, SpateError> = {
        do throws(SpateError) { return .success(try await d.run()) } catch { return .failure(error) }
    }()
    var notices: [String] = []
    for await event in d.events { if case .notice(let text) = event { notices.append(text) } }
    return (await result, notices)
}

/// A seeded generator whose seed is printed, so a failing property test can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    private var generator: SplitMix64
    let seed: UInt64

    init(label: String) {
        let env = ProcessInfo.processInfo.environment["SPATE_TEST_SEED"].flatMap { UInt64($0) }
        let s = env ?? 0x5EED_2026
        self.seed = s
        self.generator = SplitMix64(seed: s)
        print("[\(label)] seed \(s) (replay with SPATE_TEST_SEED=\(s))")
    }

    mutating func next() -> UInt64 { generator.next() }
}
