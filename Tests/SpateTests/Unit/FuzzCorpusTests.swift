import Foundation
@_spi(Fuzzing) import Spate
import Testing

/// The fuzz corpus (`Fuzz/corpus/TARGET`, grown by `scripts/fuzz`) and any saved crash
/// (`Fuzz/crashes/TARGET`) replayed through every target on each test run: a parser change
/// that traps on an input the fuzzer once found fails here, without a fuzzing build.
@Suite("Fuzz corpus")
struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    @Test(arguments: FuzzTargets.names)
    func theCorpusReplaysWithoutATrap(target: String) throws {
        var inputs = 0
        for folder in ["Fuzz/corpus/\(target)", "Fuzz/crashes/\(target)"] {
            let dir = Self.root.appendingPathComponent(folder)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            for name in names.sorted() {
                let data = try Data(contentsOf: dir.appendingPathComponent(name))
                #expect(data.withUnsafeBytes { FuzzTargets.run(target, $0) })
                inputs += 1
            }
        }
        #expect(inputs > 0, "no corpus for \(target) in \(Self.root.path)/Fuzz/corpus")
    }

    @Test func anUnknownTargetIsRefused() {
        #expect(!FuzzTargets.run("no-such-target", UnsafeRawBufferPointer(start: nil, count: 0)))
    }
}
