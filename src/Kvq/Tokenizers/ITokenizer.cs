namespace Kvq.Tokenizers;

/// <summary>Text &lt;-&gt; token ids for one model vocabulary.</summary>
public interface ITokenizer
{
    int VocabSize { get; }
    int BosId { get; }           // -1 when the vocabulary has none
    int EosId { get; }           // -1 when the vocabulary has none
    /// <summary>Whether a BOS token is put in front of a prompt (from the model's metadata).</summary>
    bool AddBos { get; }

    /// <summary>
    /// Whether encoding puts a space in front of the text (SentencePiece's "dummy prefix"). Whole-sequence decoding
    /// then drops one leading space from the sequence's first token unless that token is BOS, as llama.cpp does.
    /// </summary>
    bool AddSpacePrefix { get; }

    /// <summary>Tokens of <paramref name="text"/>; BOS first when <paramref name="addBos"/> and the vocabulary has one.
    /// Special/control token texts inside <paramref name="text"/> are treated as plain text unless <paramref name="parseSpecial"/>.</summary>
    int[] Encode(string text, bool addBos, bool parseSpecial = false);

    /// <summary>The raw bytes a token stands for when text is decoded (byte-fallback tokens give one byte, control tokens none).</summary>
    ReadOnlySpan<byte> TokenBytes(int id);

    /// <summary>Whether generation ends at this token (EOS, EOT and other end-of-generation tokens).</summary>
    bool IsEndOfGeneration(int id);

    /// <summary>The piece text as stored in the vocabulary (for display in inspect/debug).</summary>
    string Piece(int id);
}
