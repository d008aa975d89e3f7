@testable import Spate
import Testing

@Suite("Download results")
struct DownloadResultTests {
    /// A resumed download's rate is what this run fetched over how long it ran.
    @Test func theRateLeavesResumedBytesOut() {
        var result = DownloadResult(path: "f", bytes: 3000, elapsed: .seconds(2), verifiedChecksum: nil, verificationTail: nil,
                                    connections: 1, requests: 1, retries: 0)
        #expect(result.bytesPerSecond == 1500)
        result.bytesResumed = 1000
        #expect(result.bytesPerSecond == 1000)
        result.elapsed = .zero
        #expect(result.bytesPerSecond == 0)
    }
}
