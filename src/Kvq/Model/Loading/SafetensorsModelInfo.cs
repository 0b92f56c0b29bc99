namespace Kvq.Model.Loading;

/// <summary>
/// What a Hugging Face model folder holds, as found by <see cref="SafetensorsLoader.ReadInfo"/>: the parsed
/// config, the weight files in load order, and the tokenizer files for whoever builds the tokenizer.
/// </summary>
public sealed record SafetensorsModelInfo
{
    public required string Directory { get; init; }
    public required string ConfigPath { get; init; }
    public required HfConfig Config { get; init; }
    /// <summary>model.safetensors.index.json when the weights are sharded through one; null otherwise.</summary>
    public string? IndexPath { get; init; }
    /// <summary>Full paths of the .safetensors files, sorted by file name.</summary>
    public required IReadOnlyList<string> WeightFiles { get; init; }
    /// <summary>The index's weight_map (tensor name -> full shard path); null without an index.</summary>
    public IReadOnlyDictionary<string, string>? WeightMap { get; init; }
    /// <summary>tokenizer.json (HF tokenizers format) if the folder has one.</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>tokenizer_config.json (special tokens, chat template) if the folder has one.</summary>
    public string? TokenizerConfigPath { get; init; }
}
