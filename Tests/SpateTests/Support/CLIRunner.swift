import Foundation

/// Runs the built `spate` executable (it sits beside the test bundle in the build folder).
struct CLIRunner {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var executable: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: me).deletingLastPathComponent()
        // Swift Testing may run from inside the .xctest bundle folder.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("spate").path
    }

    /// `run` for async tests: the wait happens on a thread of its own, not on one of the
    /// cooperative pool's (two on this machine). Why: a test blocked in `waitUntilExit` holds
    /// a pool thread for as long as the child runs, and two of them at once stall every other
    /// test's tasks (a batch test that waits for its cancel saw its replies come first).
    static func run(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:],
                    stdinPath: String? = nil) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result {
                    try runBlocking(arguments, in: directory, environment: environment, stdinPath: stdinPath)
                })
            }
        }
    }

    /// Runs `spate` with `arguments` in `directory`, waiting for it to exit; its standard
    /// input is `stdinPath` (default: empty).
    static func run(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:],
                    stdinPath: String? = nil) throws -> Output {
        try runBlocking(arguments, in: directory, environment: environment, stdinPath: stdinPath)
    }

    private static let spawnLock = NSLock()

    /// Starts `process`, one spawn at a time in this test process: every test that starts a
    /// child goes through here. Why: swift-corelibs-foundation's `Process.run` crashed twice
    /// in `memcpy` (a bad pointer at a page's end) while other threads spawned too, with dozens
    /// of CLI tests running at once under load. A spawn takes about a millisecond; the children
    /// still run, and are waited for, side by side.
    static func spawn(_ process: Process) throws {
        try spawnLock.withLock { try process.run() }
    }

    private static func runBlocking(_ arguments: [String], in directory: String?, environment: [String: String],
                                    stdinPath: String?) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdinPath.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        try spawn(process)
        // Read both pipes to the end before waiting, so a chatty child never blocks on a full pipe.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Output(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}
