/// Downloads the whole body in one request, for servers without range support or when the
/// length is unknown. A failure part-way starts over from byte 0: such a server cannot resume.
struct StreamFetcher {
    let requests: RequestBuilder
    let transport: DownloadTransport
    let remote: RemoteFile
    let output: StagedOutputFactory
    let seed: UInt64
    /// The probe's reply, when it is this stream already (`RemoteResolver.takeHandover`): the
    /// first attempt goes on with it instead of asking again.
    var handover: TransferHandover? = nil

    /// Returns the number of bytes written.
    func run() async throws -> Int64 {
        var handover = self.handover
        var budget = RetryBudget(policy: requests.options.retry)
        var random = SplitMix64(seed: seed)
        let counters = transport.counters
        while true {
            try Task.checkCancellation()
            let before = counters.bytesWritten.load(ordering: .relaxed)
            let sink = StreamSink(output: output.make(), remote: remote, counters: counters)
            let adopting = handover
            handover = nil
            let outcome: TransferOutcome
            do {
                if let adopting {
                    // The probe's paused reply comes with its connection slot (`TransferHandover.keep`).
                    outcome = try await transport.adopt(adopting, sink: sink)
                } else {
                    outcome = try await transport.withSlot(for: remote.url.origin) { slot in
                        let spec = requests.stream(remote, bufferBytes: transport.session.receiveBufferBytes(fixed: requests.options.receiveBufferBytes),
                                                   slot: slot)
                        return try await transport.perform(spec, sink: sink)
                    }
                }
            } catch {
                _ = await sink.flush()  // cancelled: let its writes land first
                throw error
            }
            let writeError = await sink.flush()
            let end = writeError.map(TransferEnd.localFailure)
                ?? sink.end(of: outcome, url: remote.url, wallSeconds: transport.clock.wallSeconds)
            if end == .completed { return sink.position }
            // Progress shown must not count bytes that will be written again.
            counters.bytesWritten.store(before, ordering: .relaxed)
            try await transport.retryAlone(after: end, budget: &budget, random: random.nextUnitInterval(),
                                           note: sink.position > 0 ? "; the server cannot resume, starting over" : "")
        }
    }
}

/// Makes the staged outputs (writer, file, write group) of one download's requests.
struct StagedOutputFactory: Sendable {
    let writer: FileWriter
    let target: WriteTarget

    func make() -> StagedOutput { StagedOutput(writer: writer, target: target) }
}
