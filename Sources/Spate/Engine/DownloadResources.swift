/// Everything one download holds open on this machine — the partial file, its resume journal,
/// the running digest, and its place in the session's writer — opened in one place and closed
/// in one place, in one order: queued writes drained → digest stopped → journal committed (kept
/// for a resume, or deleted) → file published, kept or deleted. On success (`complete`) and on
/// every failure (`close`).
final class DownloadResources: @unchecked Sendable {
    let file: OutputFile
    let journal: Journal?
    let hasher: WatermarkHasher?
    /// The bytes already on disk, verified (a resume), or none.
    let alreadyDone: RangeSet
    private let target: WriteTarget
    private let session: DownloadSession
    private let identity: ObjectIdentifier
    private var isClosed = false

    /// Staged outputs for this download's requests.
    var output: StagedOutputFactory { StagedOutputFactory(writer: session.writer, target: target) }

    private init(file: OutputFile, journal: Journal?, hasher: WatermarkHasher?, alreadyDone: RangeSet,
                 session: DownloadSession, identity: ObjectIdentifier) {
        self.file = file
        self.journal = journal
        self.hasher = hasher
        self.alreadyDone = alreadyDone
        self.session = session
        self.identity = identity
        self.target = WriteTarget(file: file, computesCRC: journal != nil)
        session.writer.attach()
        if let journal { session.committer.register(journal) }
    }

    /// Opens the partial file (new, or to resume as `ResumePlanner` decides), then the journal
    /// and the digest.
    ///
    /// - Parameters:
    ///   - header: the journal header this download would write; nil when it keeps no journal.
    ///   - identity: the download, for the session's accounting.
    /// - Parameter streamWindow: an ordered stream's reorder window when ranges arrive out of
    ///   order; nil when one stream is written straight through (or for a file).
    static func open(path: String, header: JournalCodec.Header?, remote: RemoteFile, size: Int64?, options: DownloadOptions,
                     checksum: Checksum?, session: DownloadSession, identity: ObjectIdentifier, streamWindow: Int64?,
                     emit: @Sendable (DownloadEvent) -> Void) throws(SpateError) -> DownloadResources {
        switch options.output {
        case .file:
            break
        case .stream(let fd, _):
            let stream = try StreamOutput(outputFD: fd, name: path, windowBytes: streamWindow,
                                          algorithm: checksum?.algorithm)
            return DownloadResources(file: OutputFile(streamingTo: stream, name: path), journal: nil, hasher: nil,
                                     alreadyDone: RangeSet(), session: session, identity: identity)
        case .discard:
            return DownloadResources(file: OutputFile(streamingTo: nil, name: path), journal: nil, hasher: nil,
                                     alreadyDone: RangeSet(), session: session, identity: identity)
        }
        let (file, records, covered, header) = try openFile(path, header: header, remote: remote, size: size, options: options, emit: emit)
        let journal: Journal?
        do {
            journal = try header.map { header throws(SpateError) in
                try Journal(path: Journal.path(for: path), header: header, records: records, data: file,
                            commitInterval: options.journalCommitInterval)
            }
        } catch {
            // A journal that cannot be written must not leave an orphaned partial file behind.
            file.discard()
            throw error
        }
        let hasher = checksum.map { WatermarkHasher(fd: file.fd, path: file.partPath, algorithm: $0.algorithm) }
        return DownloadResources(file: file, journal: journal, hasher: hasher, alreadyDone: covered,
                                 session: session, identity: identity)
    }

    /// The download is complete: every byte is written. Drains the writes, checks the digest,
    /// makes the file durable and gives it its final name, then deletes the journal.
    /// Returns how long the digest took after the last byte.
    ///
    /// Throws a checksum mismatch or a local I/O error; the caller then calls `close`.
    func complete(size: Int64, truncate: Bool, checksum: Checksum?, overwrite: Bool, mark: SavedMark?,
                  clock: any EngineClock) async throws -> Duration? {
        session.writer.drain(target)
        if !file.discards && file.fd < 0 {
            // An ordered stream: done once the last byte reached the reader. A mismatch can
            // only be reported now — the bytes are gone — but the exit code says it.
            let lastByte = clock.now
            let actual = try await file.stream!.finish(size: size)
            let tail = clock.now - lastByte
            if let expected = checksum, let actual, actual != expected.digest {
                throw SpateError(.checksumMismatch, "checksum mismatch: expected \(expected.algorithm.rawValue):\(expected.hex), got \(expected.algorithm.rawValue):\(Hex.encode(actual)) (the bytes were already written to \(file.finalPath))")
            }
            file.stream!.stop()
            file.close()
            release()
            return checksum == nil ? nil : tail
        }
        if file.discards {
            file.close()
            release()
            return nil
        }
        if truncate { try file.truncate(to: size) }
        var tail: Duration?
        if let hasher, let expected = checksum {
            let lastByte = clock.now
            let actual = try await hasher.finish(size: size)
            tail = clock.now - lastByte
            guard actual == expected.digest else {
                throw SpateError(.checksumMismatch, "checksum mismatch: expected \(expected.algorithm.rawValue):\(expected.hex), got \(expected.algorithm.rawValue):\(Hex.encode(actual))")
            }
        }
        hasher?.stop()
        // The journal's last commit needs the data descriptor: it stops before the file is
        // closed and renamed, and is deleted once the final name exists.
        if let journal {
            session.committer.unregister(journal)
            journal.close()
        }
        try file.finish(mode: FileMode.newFileMode, replaceExisting: overwrite, mark: mark)
        journal?.remove()
        release()
        return tail
    }

    /// The download failed or was cancelled. Keeps the partial file and journal for a resume
    /// when `keepForResume`, else deletes both. Idempotent.
    func close(keepForResume: Bool) {
        guard !isClosed else { return }
        session.writer.drain(target)
        hasher?.stop()
        file.stream?.stop()
        if let journal { session.committer.unregister(journal) }
        if keepForResume, let journal {
            journal.close()
            file.close()
        } else {
            journal?.remove()
            file.discard()
        }
        release()
    }

    private func release() {
        isClosed = true
        session.writer.detach()
        session.setConnections(nil, for: identity)
    }

    /// Creates the partial file, or opens it to resume, following `ResumePlanner`. Returns the
    /// file, the verified records already on disk, and the bytes they cover.
    /// Also returns the journal header to write (`ResumePlanner.aligned` with a resumed one).
    private static func openFile(_ destination: String, header: JournalCodec.Header?, remote: RemoteFile, size: Int64?,
                                 options: DownloadOptions, emit: @Sendable (DownloadEvent) -> Void)
        throws(SpateError) -> (OutputFile, [HashedRange], RangeSet, JournalCodec.Header?) {
        let partPath = OutputFile.partPath(for: destination)
        let journalPath = Journal.path(for: destination)
        let replacing = options.partialFileReplace
        guard options.journal else {
            return (try OutputFile(creatingFor: destination, replacing: replacing), [], RangeSet(), header)
        }
        var found = ResumePlanner.Found(partExists: FilePaths.exists(partPath), journal: nil, journalError: nil)
        // A live download's partial file (another process holds its lock) is never resumed,
        // replaced or reported as a leftover: say who has it.
        if found.partExists, let conflict = OutputLock.conflict(at: partPath) { throw conflict }
        do { found.journal = try Journal.load(path: journalPath) } catch { found.journalError = error }
        if options.replacesUnjournaledPartial && found.partExists && found.journal == nil && found.journalError == nil {
            // A batch's leftover (a small file's, or one killed before its journal's first
            // byte): replaced if it is spate's and nobody holds it.
            emit(.notice("\(partPath) has no journal (left by an interrupted run): starting over"))
            return (try OutputFile(creatingFor: destination, replacing: .leftover), [], RangeSet(), header)
        }
        /// A new partial file; the old journal (if any) goes once the new file is held.
        func newFile(replacing: OutputFile.Replace, removeJournal: Bool) throws(SpateError) -> OutputFile {
            let file = try OutputFile(creatingFor: destination, replacing: replacing)
            if removeJournal {
                do { try file.removeStaleJournal() } catch {
                    file.discard()
                    throw error
                }
            }
            return file
        }
        // A new journal takes the best validator; a resumed one keeps the kind it recorded.
        let fresh = header
        var header = header
        if let expected = header, let previous = found.journal?.header {
            header = ResumePlanner.aligned(expected, to: previous, remote: remote)
        }
        switch ResumePlanner.decide(found: found, expected: header, partPath: partPath, journalPath: journalPath,
                                    overwrite: options.overwrite, restartOnChange: options.restartOnChange) {
        case .refuse(let error):
            throw error
        case .fresh:
            let stale = found.journal != nil || found.journalError != nil || options.overwrite
            return (try newFile(replacing: options.overwrite ? .always : .never, removeJournal: stale), [], RangeSet(), fresh)
        case .restart(let why):
            emit(.notice(why))
            return (try newFile(replacing: .always, removeJournal: true), [], RangeSet(), fresh)
        case .resume(let records):
            let file = try OutputFile(resumingFor: destination, size: size ?? 0)
            let verified = options.verifyResume ? file.verify(records) : records
            let covered = HashedRangeList(records: verified).covered
            var text = "resuming: \(ByteSize.format(covered.count)) of \(ByteSize.format(size ?? 0)) already on disk"
            if verified.count < records.count {
                text += "; \(records.count - verified.count) recorded range(s) failed verification and will be fetched again"
            }
            emit(.notice(text))
            return (file, verified, covered, header)
        }
    }
}
