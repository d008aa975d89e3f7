import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// The cluster recipes in docs/cluster run as written: N shard processes on loopback (the
/// command taken from the Kubernetes Job and the Slurm script, with the variables their
/// schedulers set) fetch a list whose union is the whole manifest, exact, with no file in two
/// shards; a shard killed with SIGKILL and started again completes.
///
/// Each shard gets its own directory here (the recipes point every shard at one shared
/// directory), so that disjointness can be seen: no file saved by two shards.
@Suite("Cluster recipes", .timeLimit(.minutes(5)))
struct ClusterDocsTests {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/cluster")

    /// The shell command of the Job's container, and N (`completions`).
    func kubernetesCommand() throws -> (String, Int) {
        let yaml = try String(contentsOf: Self.docs.appendingPathComponent("kubernetes-indexed-job.yaml"), encoding: .utf8)
        let lines = yaml.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let command = try #require(lines.first { $0.hasPrefix("- exec spate ") }).dropFirst(2)
        let completions = try #require(lines.first { $0.hasPrefix("completions:") }.flatMap { Int($0.split(separator: " ")[1]) })
        let shards = try #require(lines.firstIndex(of: "- name: SHARDS").map { lines[$0 + 1] })
        #expect(shards == "value: \"\(completions)\"", "SHARDS must equal completions")
        return (String(command), completions)
    }

    /// N from the script's `#SBATCH --array=0-(N-1)`.
    func slurmShards() throws -> Int {
        let script = try String(contentsOf: Self.docs.appendingPathComponent("slurm-array.sh"), encoding: .utf8)
        let line = try #require(script.split(separator: "\n").first { $0.hasPrefix("#SBATCH --array=0-") })
        return try #require(Int(line.dropFirst("#SBATCH --array=0-".count))) + 1
    }

    struct Fixture {
        let contents: [GeneratedContent]
        let manifest: String
    }

    func fixture(_ server: TestServer, in dir: TemporaryDirectory) throws -> Fixture {
        var contents: [GeneratedContent] = []
        var lines: [String] = []
        for i in 0..<60 {
            let content = GeneratedContent(seed: UInt64(8000 + i), size: Int64(i % 6 == 0 ? (2 << 20) + i : 1000 * i))
            contents.append(content)
            server.addFile("/c/\(i).bin", TestServer.File(content: content))
            lines.append("\(server.url("/c/\(i).bin")) part\(i % 4)/\(i).bin")
        }
        let manifest = dir.file("files.txt")
        try lines.joined(separator: "\n").write(toFile: manifest, atomically: true, encoding: .utf8)
        return Fixture(contents: contents, manifest: manifest)
    }

    func process(_ launch: [String], environment: [String: String], in dir: String) -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: launch[0])
        p.arguments = Array(launch.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = URL(fileURLWithPath: CLIRunner.executable).deletingLastPathComponent().path + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        for (k, v) in environment { env[k] = v }
        p.environment = env
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        return p
    }

    /// Every file is in exactly one shard directory, exact; nothing else is there.
    func expectPartition(_ fixture: Fixture, shards: Int, in dir: TemporaryDirectory) {
        for (i, content) in fixture.contents.enumerated() {
            let holders = (0..<shards).filter { FileManager.default.fileExists(atPath: dir.file("out\($0)/part\(i % 4)/\(i).bin")) }
            #expect(holders.count == 1, "file \(i) saved by shards \(holders)")
            if let k = holders.first {
                #expect(compareFile(dir.file("out\(k)/part\(i % 4)/\(i).bin"), with: content) == nil, "file \(i)")
            }
        }
        let stray = (0..<shards).flatMap { k in
            (FileManager.default.enumerator(atPath: dir.file("out\(k)"))?.allObjects as? [String] ?? [])
                .filter { $0.hasSuffix(".part") || $0.hasSuffix(".journal") }
        }
        #expect(stray.isEmpty, "left behind: \(stray)")
    }

    @Test func theKubernetesIndexedJobRunsAsWritten() async throws {
        let (command, shards) = try kubernetesCommand()
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let fixture = try fixture(server, in: dir)
            let pods = (0..<shards).map { k in
                process(["/bin/sh", "-c", command], environment: [
                    "JOB_COMPLETION_INDEX": "\(k)", "SHARDS": "\(shards)",
                    "SPATE_MANIFEST": fixture.manifest, "SPATE_DIR": dir.file("out\(k)"),
                ], in: dir.path)
            }
            for pod in pods { try CLIRunner.spawn(pod) }
            for pod in pods { pod.waitUntilExit() }
            #expect(pods.allSatisfy { $0.terminationStatus == 0 })
            expectPartition(fixture, shards: shards, in: dir)
        }
    }

    @Test func theSlurmArrayRunsAsWrittenAndAKilledTaskCompletesWhenRerun() async throws {
        let shards = try slurmShards()
        let script = Self.docs.appendingPathComponent("slurm-array.sh").path
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let fixture = try fixture(server, in: dir)
            // Task 0's files arrive slowly, and its first request is the signal to kill it.
            let shard0 = try ManifestShard(index: 0, count: shards)
            let firstRequest = DispatchSemaphore(value: 0)
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                let i = Int(request.uri.split(separator: "/").last!.split(separator: ".")[0])!
                if shard0.contains(destination: "part\(i % 4)/\(i).bin") {
                    plan.bytesPerSecond = 1 << 20
                    firstRequest.signal()
                }
                return plan
            }
            func task(_ k: Int) -> Process {
                process(["/bin/bash", script], environment: [
                    "SLURM_ARRAY_TASK_ID": "\(k)", "SLURM_ARRAY_TASK_COUNT": "\(shards)",
                    "SPATE_MANIFEST": fixture.manifest, "SPATE_DIR": dir.file("out\(k)"), "SPATE": CLIRunner.executable,
                ], in: dir.path)
            }
            let tasks = (0..<shards).map(task)
            for t in tasks { try CLIRunner.spawn(t) }
            firstRequest.wait()
            kill(tasks[0].processIdentifier, SIGKILL)
            for t in tasks { t.waitUntilExit() }
            #expect(tasks[0].terminationReason == .uncaughtSignal)
            #expect(tasks.dropFirst().allSatisfy { $0.terminationStatus == 0 })
            server.setHook(nil)
            let rerun = task(0)
            try CLIRunner.spawn(rerun)
            rerun.waitUntilExit()
            #expect(rerun.terminationStatus == 0)
            expectPartition(fixture, shards: shards, in: dir)
        }
    }
}
