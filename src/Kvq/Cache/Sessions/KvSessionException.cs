namespace Kvq.Cache.Sessions;

/// <summary>Why a session file was refused.</summary>
public enum KvSessionError
{
    /// <summary>The file does not exist or cannot be read.</summary>
    Unreadable,
    /// <summary>Not a Kvq session file (wrong magic).</summary>
    NotASession,
    /// <summary>Written by a newer or older layout this build does not read.</summary>
    UnsupportedVersion,
    /// <summary>Shorter than its header says (an interrupted copy).</summary>
    Truncated,
    /// <summary>The SHA-256 over its content does not match (a flipped bit, an edited file).</summary>
    Checksum,
    /// <summary>Saved with another model (config, tokenizer or weights).</summary>
    ModelMismatch,
    /// <summary>Saved with another KV format, block size, sink count or calibration profile.</summary>
    FormatMismatch,
    /// <summary>Checksum fine but the content is inconsistent (sizes that do not fit the format).</summary>
    Malformed,
}

/// <summary>A session file that cannot be restored: names the file, the reason and what was expected vs found.</summary>
public sealed class KvSessionException(string path, KvSessionError error, string detail)
    : Exception($"session file {path}: {Describe(error)}: {detail}")
{
    public string Path { get; } = path;
    public KvSessionError Error { get; } = error;

    private static string Describe(KvSessionError e) => e switch
    {
        KvSessionError.Unreadable => "cannot be read",
        KvSessionError.NotASession => "not a kvq session file",
        KvSessionError.UnsupportedVersion => "unsupported version",
        KvSessionError.Truncated => "truncated",
        KvSessionError.Checksum => "checksum mismatch (the file is corrupted)",
        KvSessionError.ModelMismatch => "saved with another model",
        KvSessionError.FormatMismatch => "saved with another KV format",
        _ => "malformed",
    };
}
