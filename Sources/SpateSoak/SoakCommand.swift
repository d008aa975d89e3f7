import ArgumentParser
import Glibc
import SpateTestServer

/// `spate-soak`: the long chaos run, separate from `swift test`.
///
///     swift run -c release spate-soak --schedules 200
///
/// Every schedule downloads a random file through seeded faults; the run fails if any output
/// is wrong (a clean failure with no output is allowed and counted).
@main
struct SoakCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spate-soak",
        abstract: "Run seeded chaos schedules against the loopback test server.")

    @Option(help: "Number of schedules.")
    var schedules: Int = 200

    @Option(help: "First seed (schedules use seed, seed+1, ...).")
    var seed: UInt64 = 1

    @Flag(help: "Print one line per schedule.")
    var verbose = false

    @Option(help: "Instead of chaos schedules: kill -9 the spate CLI at this many seeded points, resuming each time.")
    var killPoints: Int?

    mutating func run() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        var template = Array("/tmp/spate-soak-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ValidationError("cannot create a temporary directory")
        }
        let directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { rmdir(directory) }

        if let killPoints {
            var done = 0, downloads = 0, failures: [UInt64] = []
            let started = ContinuousClock.now
            var s = seed
            while done < killPoints {
                let report = try KillResumeSoak(seed: s, server: server, directory: directory).run()
                done += report.killPoints
                downloads += 1
                if let wrong = report.wrong {
                    failures.append(s)
                    print("seed \(s): WRONG: \(wrong)")
                } else if verbose {
                    print("seed \(s): \(report.killPoints) kill points, resumed to the exact file")
                }
                s += 1
            }
            print("spate-soak: \(done) kill -9 points over \(downloads) downloads (seeds \(seed)...\(s - 1)): "
                  + "\(failures.count) wrong or failed outputs in \(ContinuousClock.now - started)")
            if !failures.isEmpty { throw ExitCode(1) }
            return
        }

        var exact = 0, clean = 0, wrong: [UInt64] = [], faults = 0
        let started = ContinuousClock.now
        for s in seed..<(seed + UInt64(schedules)) {
            let report = await ChaosScenario(seed: s).run(server: server, directory: directory)
            faults += report.faults.count
            switch report.verdict {
            case .exact: exact += 1
            case .cleanFailure: clean += 1
            case .wrongOutput: wrong.append(s)
            }
            if verbose || report.verdict != .exact {
                print("seed \(s): \(report.size) bytes, \(report.connections) conn, \(report.faults.count) faults, changed \(report.changed): \(report.verdict) in \(report.elapsed)")
                if verbose && report.faults.count <= 8 { print("  faults: \(report.faults.map(\.description).joined(separator: ", "))") }
            }
        }
        print("spate-soak: \(schedules) schedules (seeds \(seed)...\(seed + UInt64(schedules) - 1)), \(faults) faults injected: "
              + "\(exact) exact, \(clean) clean failures, \(wrong.count) wrong outputs in \(ContinuousClock.now - started)")
        if !wrong.isEmpty {
            print("wrong outputs for seeds: \(wrong)")
            throw ExitCode(1)
        }
    }
}
