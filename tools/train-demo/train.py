#!/usr/bin/env python3
# Trains the embedded demo model (models/demo/): a byte-level BPE tokenizer and a small
# LlamaForCausalLM on the corpus built by make_corpus.sh, then saves it in Hugging Face
# layout (bf16 safetensors) with reference greedy outputs computed by transformers in
# float32 on the CPU from the saved bf16 weights (what the C engine computes).
# Runs on the GPU machine (see run_on_device.sh); must not download anything.
# Every random choice is seeded; the run is one fixed number of optimizer steps.
import argparse
import json
import lzma
import math
import os
import random
import sys
import time

import numpy as np
import torch

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

DOC_SEP = "\n<|end_of_text|>\n"
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# User turns for the fortune cookies that are turned into chat examples (fixed rotation).
CHAT_ASKS = ["Tell me a fortune.", "Say something wise.", "Give me a quote.",
             "Tell me something funny.", "What is your advice for today?"]
REF_PROMPTS = [
    "The Debian project is",
    "A database is",
    "The kernel sends a signal to the process when",
    "<|im_start|>user\nTell me a fortune.<|im_end|>\n<|im_start|>assistant\n",
    "Python is a programming language that",
]


def log(msg, f=None):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if f:
        f.write(line + "\n")
        f.flush()


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def read_corpus(path):
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    docs = text.split(DOC_SEP)
    if docs and not docs[-1].strip():
        docs.pop()
    return text, docs


def read_sources(path):
    """[(source, first_doc, end_doc)] from make_corpus.sh's corpus.sources.tsv."""
    out, start = [], 0
    with open(path) as f:
        for line in f:
            name, end = line.rstrip("\n").split("\t")
            out.append((name, start, int(end)))
            start = int(end)
    return out


def build_tokenizer(train_docs, vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # The special tokens go after the merges (ids vocab_size-4 .. vocab_size-1), as in the
    # test fixture tokenizer.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    base = tok.get_vocab_size()
    if base != vocab_size - len(SPECIALS):
        raise SystemExit(f"BPE trainer stopped at {base} tokens, wanted {vocab_size - len(SPECIALS)}")
    tok.add_special_tokens([AddedToken(s, single_word=False, lstrip=False, rstrip=False,
                                       normalized=False, special=True) for s in SPECIALS])
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == base + i, (s, tok.token_to_id(s))
    return tok


def chat_doc(i, fortune):
    ask = CHAT_ASKS[i % len(CHAT_ASKS)]
    return f"<|im_start|>user\n{ask}<|im_end|>\n<|im_start|>assistant\n{fortune}<|im_end|>\n"


def encode_docs(tok, docs, eos):
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int16 if tok.get_vocab_size() < 32768 else np.int32)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model, val, seq, batch, max_windows):
    """Mean next-token loss over non-overlapping windows of the held-out stream; when
    max_windows is smaller than the stream, the windows are spread evenly over all of it
    (the stream is ordered by source)."""
    model.eval()
    avail = (len(val) - 1) // seq
    n = min(max_windows, avail)
    pick = torch.linspace(0, avail - 1, n, device=val.device).round().long()
    total, count = 0.0, 0
    for b in range(0, n, batch):
        starts = pick[b:b + batch] * seq
        chunk = val[starts[:, None] + torch.arange(seq + 1, device=val.device)[None, :]].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)),
                                                 y.reshape(-1), reduction="sum")
        total += loss.item()
        count += y.numel()
    model.train()
    return total / count, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True, help="corpus.txt or corpus.txt.xz from make_corpus.sh")
    ap.add_argument("--sources", required=True, help="corpus.sources.tsv from make_corpus.sh")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=1 << 30)
    ap.add_argument("--val-every", type=int, default=50, help="every Nth document is held out")
    ap.add_argument("--tok-docs", type=int, default=0, help="train the tokenizer on the first N train docs (0: all)")
    ap.add_argument("--max-new", type=int, default=32)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train_log.txt"), "w")
    t_start = time.time()
    seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda"
    log(f"torch {torch.__version__} transformers {transformers.__version__} tokenizers {tokenizers.__version__} "
        f"gpu {torch.cuda.get_device_name(0)} args {vars(args)}", logf)

    # --- data ---------------------------------------------------------------------------
    _, docs = read_corpus(args.corpus)
    sources = read_sources(args.sources)
    if sources[-1][2] != len(docs):
        raise SystemExit(f"{args.sources} covers {sources[-1][2]} docs, corpus has {len(docs)}")
    fortune_end = next(e for n, s, e in sources if n == "fortunes")
    # Held out: every val_every-th document (offset half way), spread over all sources.
    is_val = [i % args.val_every == args.val_every // 2 for i in range(len(docs))]
    train_docs = [d for i, d in enumerate(docs) if not is_val[i]]
    val_docs = [d for i, d in enumerate(docs) if is_val[i]]
    # One in three fortune cookies becomes a ChatML example, so the chat template means something.
    def shaped(i, d):
        return chat_doc(i, d) if i < fortune_end and i % 3 == 0 else d
    train_shaped = [shaped(i, d) for i, d in enumerate(docs) if not is_val[i]]
    val_shaped = [shaped(i, d) for i, d in enumerate(docs) if is_val[i]]
    log(f"corpus: {len(docs)} docs ({sum(map(len, docs))} chars); train {len(train_docs)}, "
        f"held out {len(val_docs)}; sources {sources}", logf)

    t0 = time.time()
    tok_src = train_docs[:args.tok_docs] if args.tok_docs else train_docs
    tok = build_tokenizer(tok_src, args.vocab)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    t_tok = time.time() - t0
    tok.save(os.path.join(args.out, "tokenizer.json"))
    train_ids = encode_docs(tok, train_shaped, eos)
    val_ids = encode_docs(tok, val_shaped, eos)
    n_chars_val = sum(len(d) for d in val_shaped)
    log(f"tokenizer: {tok.get_vocab_size()} tokens in {t_tok:.1f}s; train {len(train_ids)} tokens, "
        f"held out {len(val_ids)} tokens ({n_chars_val / len(val_ids):.2f} chars/token)", logf)
    train_t = torch.from_numpy(train_ids.astype(np.int32)).to(dev)
    val_t = torch.from_numpy(val_ids.astype(np.int32)).to(dev)

    # --- model --------------------------------------------------------------------------
    cfg = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
        max_position_embeddings=args.ctx, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
        attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=0.02)
    seed_all(args.seed + 1)
    model = LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters ({n_params / 1e6:.2f} M)", logf)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    # --- train --------------------------------------------------------------------------
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed + 2)
    seq = args.ctx
    best = (float("inf"), -1, None)
    history = []
    model.train()
    torch.cuda.synchronize()
    t_train = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        starts = torch.randint(0, len(train_t) - seq - 1, (args.batch,), device=dev, generator=gen)
        offs = starts[:, None] + torch.arange(seq + 1, device=dev)[None, :]
        chunk = train_t[offs].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last = step == args.steps - 1
        if step % 100 == 0 or last:
            log(f"step {step} loss {loss.item():.4f} lr {lr_at(step, args):.2e} "
                f"elapsed {time.time() - t_train:.1f}s", logf)
        if (step + 1) % args.eval_every == 0 or last:
            vl, vn = evaluate(model, val_t, seq, args.batch, args.eval_windows)
            history.append({"step": step + 1, "train_loss": loss.item(), "val_loss": vl,
                            "elapsed_s": time.time() - t_train})
            log(f"eval step {step + 1}: held-out loss {vl:.4f} ppl {math.exp(vl):.2f} over {vn} tokens", logf)
            if vl < best[0]:
                best = (vl, step + 1, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
    torch.cuda.synchronize()
    train_s = time.time() - t_train
    tokens_seen = args.steps * args.batch * seq
    log(f"trained {args.steps} steps in {train_s:.1f}s ({tokens_seen / train_s:.0f} tokens/s, "
        f"{tokens_seen / len(train_ids):.1f} epochs); best held-out loss {best[0]:.4f} at step {best[1]}", logf)
    model.load_state_dict(best[2])

    # Full held-out loss of the kept weights, in bf16 (the shipped precision).
    model = model.to(torch.bfloat16)
    vl_full, vn_full = evaluate(model, val_t, seq, args.batch, 1 << 30)
    log(f"final bf16 weights: held-out loss {vl_full:.4f} ppl {math.exp(vl_full):.2f} over {vn_full} tokens "
        f"({vl_full * vn_full / (n_chars_val * (vn_full / len(val_ids))) / math.log(2):.3f} bits/char)", logf)

    # --- save in HF layout ----------------------------------------------------------------
    model.config.dtype = torch.bfloat16
    model.generation_config = transformers.GenerationConfig(bos_token_id=bos, eos_token_id=eos)
    model.save_pretrained(args.out, safe_serialization=True)
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": args.ctx,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(args.out, "config.json")) as f:
        saved_cfg = json.load(f)
    log(f"saved config dtype {saved_cfg.get('dtype')} torch_dtype {saved_cfg.get('torch_dtype')}", logf)
    if saved_cfg.get("dtype", saved_cfg.get("torch_dtype")) != "bfloat16":
        raise SystemExit("saved config.json does not say bfloat16")

    # --- reference outputs: bf16 weights widened to f32, f32 compute on the CPU --------------
    del model
    torch.cuda.empty_cache()
    ref = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager")
    ref.eval()
    sd = ref.state_dict()
    from safetensors.torch import load_file, save_file
    stored = load_file(os.path.join(args.out, "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in stored.values()), "weights not bf16 on disk"
    assert all(torch.equal(stored[k].float(), sd[k]) for k in stored), "reload differs from file"
    hf_tok = AutoTokenizer.from_pretrained(args.out)
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "Tell me a fortune."}],
                                      tokenize=False, add_generation_prompt=True)
    assert chat == REF_PROMPTS[3], repr(chat)
    refs, tensors = [], {}
    for i, text in enumerate(REF_PROMPTS):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids, "AutoTokenizer disagrees"
        x = torch.tensor([ids])
        with torch.no_grad():
            out = ref.generate(x, do_sample=False, max_new_tokens=args.max_new, use_cache=True,
                               eos_token_id=eos, pad_token_id=eos)
            new = out[0, len(ids):].tolist()
            # Cross-check without the KV cache: full forward and argmax at each step.
            seqids, manual = list(ids), []
            for _ in range(args.max_new):
                lg = ref(input_ids=torch.tensor([seqids]), use_cache=False).logits[0, -1]
                t = int(torch.argmax(lg))
                manual.append(t)
                seqids.append(t)
                if t == eos:
                    break
            last = ref(input_ids=x, use_cache=False).logits[0, -1].float()
            top2 = torch.topk(last, 2).values
        tensors[f"p{i}.prompt_ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"p{i}.greedy_ids"] = torch.tensor(new, dtype=torch.int32)
        tensors[f"p{i}.last_logits"] = last.contiguous()
        refs.append({"prompt": text, "prompt_ids": ids, "greedy_ids": new,
                     "decoded": tok.decode(new, skip_special_tokens=False),
                     "stopped_at_eos": bool(new and new[-1] == eos),
                     "nocache_argmax_agrees": manual == new,
                     "first_step_top2_margin": float(top2[0] - top2[1])})
        log(f"ref {i}: {text!r} -> {tok.decode(new, skip_special_tokens=False)!r} "
            f"(no-cache agrees: {manual == new})", logf)
    save_file(tensors, os.path.join(args.out, "reference.safetensors"), metadata={"format": "pt"})
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                "numpy": np.__version__, "gpu": torch.cuda.get_device_name(0)}
    summary = {
        "model": "exo-actors demo", "architecture": "LlamaForCausalLM", "versions": versions,
        "seed": args.seed, "args": vars(args), "parameters": n_params,
        "weights_dtype": "bfloat16",
        "reference_compute": "weights loaded from model.safetensors (bf16) as float32, CPU, eager attention, "
                             "generate(do_sample=False, use_cache=True), no BOS prepended",
        "max_new_tokens": args.max_new, "bos_token_id": bos, "eos_token_id": eos,
        "corpus": {"documents": len(docs), "train_documents": len(train_docs),
                   "heldout_documents": len(val_docs), "train_tokens": int(len(train_ids)),
                   "heldout_tokens": int(len(val_ids)), "heldout_chars": n_chars_val},
        "training": {"steps": args.steps, "tokens_seen": tokens_seen, "seconds": round(train_s, 1),
                     "best_step": best[1], "history": history,
                     "tokenizer_seconds": round(t_tok, 1), "total_seconds": round(time.time() - t_start, 1)},
        "heldout": {"loss": vl_full, "perplexity": math.exp(vl_full), "tokens": vn_full,
                    "weights": "bf16, as shipped"},
        "prompts": refs,
        "reference_safetensors": "p{i}.prompt_ids int32, p{i}.greedy_ids int32, "
                                 "p{i}.last_logits f32 [vocab] (last prompt position)",
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"done in {time.time() - t_start:.1f}s", logf)


if __name__ == "__main__":
    main()
