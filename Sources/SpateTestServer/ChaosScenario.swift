import Glibc
import Spate
import SpateTestContent
import Synchronization

/// One seeded chaos run: a file of random size, random connections and request size, and a
/// schedule of faults injected into the range replies (sometimes also a remote change). The
/// download must end byte-exact, or fail with a clear error and leave no final file. A wrong
/// output is the one thing that must never happen.
public struct ChaosScenario: Sendable {
    public enum Verdict: Sendable, Equatable {
        case exact
        /// Failed cleanly: no output, a one-line error.
        case cleanFailure(String)
        /// The worst case: a final file that is not the remote content, or a failure that left one.
        case wrongOutput(String)
    }

    public struct Report: Sendable {
        public let seed: UInt64
        public let size: Int64
        public let connections: Int
        public let faults: [Fault]
        public let changed: Bool
        public let verdict: Verdict
        public let elapsed: Duration
    }

    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// The transient faults drawn from (stalls are short: the watchdog window is 1 s).
    public static let faults: [Fault] = [
        .closeAfter(bytes: 0), .closeAfter(bytes: 1000), .closeAfter(bytes: 100_000), .stallAfter(bytes: 3000),
        .status(503, retryAfter: "0"), .status(429, retryAfter: "0"), .status(500, retryAfter: nil),
        .fullBodyForRange, .shiftedRange(by: 512), .shiftedRange(by: -70_000), .cappedRange(at: 200_000), .gzipEncoding, .multipart,
        .slow(bytesPerSecond: 2 << 20),
    ]

    /// Runs the scenario against `server` (which it configures) writing under `directory`.
    public func run(server: TestServer, directory: String) async -> Report {
        var rng = SplitMix64(seed: seed)
        func draw(_ n: UInt64) -> UInt64 { rng.next() % n }
        let size = Int64(draw(6 << 20)) + Int64(draw(3)) * Int64(draw(1 << 20))
        let connections = Int(draw(16)) + 1
        let chunk: Int64? = draw(3) == 0 ? nil : Int64(draw(900_000)) + 4096
        let change = draw(10) == 0
        let restartOnChange = draw(2) == 0
        let rate = 0.05 + Double(draw(30)) / 100

        let original = TestServer.File(content: GeneratedContent(seed: seed, size: size))
        // The new version keeps or changes the size, and always the ETag.
        let replacement = TestServer.File(content: GeneratedContent(seed: seed ^ 0xDEAD_BEEF, size: size + Int64(draw(2))))
        let path = "/chaos-\(seed).bin"
        server.addFile(path, original)
        let schedule = FaultSchedule(seed: seed, rate: rate, faults: Self.faults)
        let requests = Mutex(0)
        let changeAfter = Int(draw(8)) + 2
        server.setHook { request in
            guard request.path == path else { return nil }
            let n = requests.withLock { c -> Int in c += 1; return c }
            let file = change && n > changeAfter ? replacement : original
            guard let range = request.header("range"), range != "bytes=0-0", let fault = schedule.next() else {
                return TestServer.standardPlan(for: request, file: file)
            }
            return fault.apply(to: request, file: file)
        }

        var options = DownloadOptions()
        options.connections = connections
        options.chunkBytes = chunk
        options.retry = RetryPolicy(maxRetries: 12, baseDelay: .milliseconds(2), maxDelay: .milliseconds(40))
        options.lowSpeedWindow = .seconds(1)
        options.restartOnChange = restartOnChange
        options.randomSeed = seed  // the engine's retry jitter replays with the schedule
        let output = directory + "/chaos-\(seed).bin"
        let started = ContinuousClock.now
        var verdict: Verdict
        do {
            let download = try Download(url: server.url(path), to: output, options: options)
            _ = try await download.run()
            // Exact means one version, whole: the original, or the new one after a restart.
            // A mixed file matches neither.
            if let difference = original.content.differences(inFileAt: output) {
                verdict = change && replacement.content.differences(inFileAt: output) == nil ? .exact : .wrongOutput(difference)
            } else {
                verdict = .exact
            }
        } catch {
            let leftovers = ChaosScenario.entries(in: directory)
            verdict = leftovers.isEmpty ? .cleanFailure(error.message) : .wrongOutput("failed (\(error.message)) but left \(leftovers)")
        }
        unlink(output)
        server.setHook(nil)
        server.removeFile(path)
        return Report(seed: seed, size: size, connections: connections, faults: schedule.injected, changed: change,
                      verdict: verdict, elapsed: ContinuousClock.now - started)
    }

    static func entries(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
