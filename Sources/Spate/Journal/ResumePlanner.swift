/// Decides, without I/O, what to do with a partial file and journal found at the output path.
///
/// Never mix versions: a journal from another URL is refused; one whose size or validator differs
/// from the server's now is refused (or discarded with `--restart-on-change`); without a
/// validator nothing can prove the file unchanged, so the download starts over.
public enum ResumePlanner {
    public enum Decision: Equatable, Sendable {
        /// No usable previous state: start a new partial file (removing stale leftovers).
        case fresh
        /// Previous state exists but cannot be used safely: discard it and start over, saying why.
        case restart(String)
        /// Continue: these records are claimed done (to be verified against the data).
        case resume([HashedRange])
        /// Stop: keep everything as it is, report this.
        case refuse(SpateError)
    }

    /// What is on disk.
    public struct Found: Sendable {
        public var partExists: Bool
        /// The decoded journal, if one exists and its header is readable.
        public var journal: JournalCodec.Contents?
        /// The error reading the journal, if one exists but is unusable.
        public var journalError: SpateError?

        public init(partExists: Bool, journal: JournalCodec.Contents?, journalError: SpateError?) {
            self.partExists = partExists
            self.journal = journal
            self.journalError = journalError
        }
    }

    /// - Parameters:
    ///   - expected: the header this download would write (URL fingerprint, size, validator),
    ///     or nil when the download cannot be journaled (no range support, no size or validator).
    public static func decide(found: Found, expected: JournalCodec.Header?, partPath: String, journalPath: String,
                              overwrite: Bool, restartOnChange: Bool) -> Decision {
        if overwrite { return .fresh }
        if !found.partExists {
            return .fresh  // a journal without data is stale
        }
        if let error = found.journalError {
            return .refuse(SpateError(.journal, "\(error.message); remove \(partPath) and the journal, or use --force to start over"))
        }
        guard let journal = found.journal else {
            return .refuse(SpateError(.localIO,
                "\(partPath) already exists but has no journal, so it cannot be resumed; remove it or use --force"))
        }
        guard let expected else {
            return .restart("the server no longer allows resuming (no byte ranges, size or validator): starting over")
        }
        if journal.header.fingerprint != expected.fingerprint {
            return .refuse(SpateError(.journal,
                "\(journalPath) belongs to a download from another URL; remove it and \(partPath), or use --force"))
        }
        if journal.header.totalSize != expected.totalSize || journal.header.validator != expected.validator {
            let what = journal.header.totalSize != expected.totalSize
                ? "size was \(journal.header.totalSize), now \(expected.totalSize)"
                : "\(journal.header.validator) is now \(expected.validator)"
            if restartOnChange {
                return .restart("the remote file changed since the interrupted download (\(what)): starting over")
            }
            return .refuse(SpateError(.remoteChanged,
                "the remote file changed since the interrupted download (\(what)); use --restart-on-change or --force to start over"))
        }
        return .resume(journal.records)
    }

    /// `expected` with the remote's validator of the kind `journal` recorded, when the remote
    /// still sends one: compare like with like. A file first seen without a strong ETag (Apache
    /// sends a weak one for a second after a change) was journaled with its Last-Modified; a
    /// rerun that now sees a strong ETag compares the dates, not an ETag with a date.
    public static func aligned(_ expected: JournalCodec.Header, to journal: JournalCodec.Header,
                               remote: RemoteFile) -> JournalCodec.Header {
        var aligned = expected
        switch journal.validator {
        case .lastModified:
            if let date = remote.lastModified { aligned.validator = .lastModified(date) }
        case .strongETag:
            if let etag = remote.strongETag { aligned.validator = .strongETag(etag) }
        case .none:
            break
        }
        return aligned
    }

    /// The journal header for a download of `size` output bytes (the whole file, or the
    /// `--range` part of it), or nil when it cannot be resumed safely later.
    public static func header(url: RemoteURL, remote: RemoteFile, range: PartialByteRange? = nil, size: Int64) -> JournalCodec.Header? {
        guard remote.acceptsRanges, remote.size != nil, size > 0 else { return nil }
        let validator: JournalCodec.Validator
        if let etag = remote.strongETag {
            validator = .strongETag(etag)
        } else if let date = remote.lastModified {
            validator = .lastModified(date)
        } else {
            return nil
        }
        return JournalCodec.Header(totalSize: size, fingerprint: JournalCodec.fingerprint(of: url, range: range),
                                   validator: validator)
    }
}
