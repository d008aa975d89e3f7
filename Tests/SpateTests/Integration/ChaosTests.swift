import SpateTestServer
import Testing

/// A short seeded chaos run inside `swift test` (the long one is `spate-soak`). Each schedule
/// must end byte-exact or as a clean failure; never a wrong output. Seeds are printed.
@Suite("Chaos", .timeLimit(.minutes(5)))
struct ChaosTests {
    @Test func seededSchedulesNeverProduceAWrongOutput() async throws {
        var rng = SeededGenerator(label: "chaos")
        let seeds = (0..<12).map { _ in rng.next() % 1_000_000 }
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            for seed in seeds {
                let report = await ChaosScenario(seed: seed).run(server: server, directory: dir.path)
                print("chaos seed \(seed): \(report.size) bytes, \(report.connections) connections, \(report.faults.count) faults: \(report.verdict)")
                if case .wrongOutput(let why) = report.verdict {
                    Issue.record("seed \(seed): wrong output: \(why)")
                }
            }
        }
    }
}
