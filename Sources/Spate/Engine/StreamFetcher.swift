/// Downloads the whole body in one request, for servers without range support or when the
/// length is unknown. A failure part-way starts over from byte 0: such a server cannot resume.
struct StreamFetcher {
    let context: EngineContext
    let remote: RemoteFile
    let writer: FileWriter

    /// Returns the number of bytes written.
    func run() async throws -> Int64 {
        var failures = 0
        while true {
            try Task.checkCancellation()
            let sink = StreamSink(writer: writer, remote: remote, counters: context.counters)
            let before = context.counters.bytesWritten.load(ordering: .relaxed)
            let outcome: TransferOutcome
            do {
                outcome = try await context.perform(context.streamSpec(remote: remote), sink: sink)
            } catch {
                _ = await sink.flush()
                throw error
            }
            if let writeError = await sink.flush() { throw writeError }
            let expected = sink.announcedLength ?? remote.size
            if outcome.completedNormally && sink.errorStatus == nil && (expected == nil || sink.position == expected) {
                return sink.position
            }
            // Progress shown must not count bytes that will be written again.
            context.counters.bytesWritten.store(before, ordering: .relaxed)
            failures += 1
            var verdict = FailureClassifier.streamFailure(outcome, sink: sink, url: remote.url)
            if sink.position > 0 {
                verdict.error = SpateError(verdict.error.kind, verdict.error.message + "; the server cannot resume, starting over",
                                           httpStatus: verdict.error.httpStatus)
            }
            try await context.backOff(verdict, failures: failures)
        }
    }
}
