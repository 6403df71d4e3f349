"""The shipped model and hardware catalogs (YAML data files inside the package) and name lookup."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from garrison.errors import ConfigError, InvalidRequest, NotFound
from garrison.sizing.architecture import ModelSpec

GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    """One device type: memory, bandwidth and compute from its spec sheet, and the runtime it implies."""

    id: str
    name: str
    kind: str
    memory_bytes: int
    bandwidth_bytes_per_s: float | None
    flops: float | None
    max_devices: int = 8
    usable_fraction: float = 1.0
    source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def usable_bytes(self) -> int:
        """Memory per device a model may occupy (Metal's working-set cap, RAM left to the OS)."""
        return int(self.memory_bytes * self.usable_fraction)


def name_key(text: str) -> str:
    """Normalise a model or hardware name for lookup: lower case, only letters, digits and dots."""
    return re.sub(r"[^a-z0-9.]+", "", text.lower())


def _data_text(filename: str) -> str:
    return resources.files("garrison.sizing").joinpath("data", filename).read_text(encoding="utf-8")


def _load_yaml(filename: str) -> dict[str, Any]:
    data = yaml.safe_load(_data_text(filename))
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: expected a mapping at the top level")
    return data


_MODEL_FIELDS = {f.name for f in fields(ModelSpec)}


def model_from_mapping(entry: dict[str, Any]) -> ModelSpec:
    """Build a ModelSpec from one catalog entry, refusing unknown keys so typos cannot pass silently."""
    unknown = set(entry) - _MODEL_FIELDS
    if unknown:
        raise ConfigError(f"model '{entry.get('id')}': unknown keys {sorted(unknown)}")
    values = dict(entry)
    values["aliases"] = tuple(values.get("aliases", ()))
    values.setdefault("name", values["id"])
    return ModelSpec(**values)


@lru_cache(maxsize=1)
def models() -> tuple[ModelSpec, ...]:
    """Every model in the shipped catalog, in catalog order."""
    return tuple(model_from_mapping(entry) for entry in _load_yaml("models.yaml")["models"])


def _hardware_from_mapping(entry: dict[str, Any]) -> Hardware:
    known = {"id", "name", "aliases", "kind", "memory_gib", "bandwidth_gbs", "tflops", "max_devices"}
    known |= {"usable_fraction", "source", "notes"}
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"hardware '{entry.get('id')}': unknown keys {sorted(unknown)}")
    if entry["kind"] not in ("cuda", "metal", "cpu"):
        raise ConfigError(f"hardware '{entry['id']}': kind must be cuda, metal or cpu")
    return Hardware(
        id=entry["id"],
        name=entry.get("name", entry["id"]),
        kind=entry["kind"],
        memory_bytes=round(float(entry["memory_gib"]) * GIB),
        bandwidth_bytes_per_s=float(entry["bandwidth_gbs"]) * 1e9,
        flops=float(entry["tflops"]) * 1e12,
        max_devices=int(entry.get("max_devices", 8)),
        usable_fraction=float(entry.get("usable_fraction", 1.0)),
        source=entry.get("source", ""),
        notes=entry.get("notes", ""),
        aliases=tuple(str(a) for a in entry.get("aliases", ())),
    )


@lru_cache(maxsize=1)
def hardware() -> tuple[Hardware, ...]:
    """Every device in the shipped hardware catalog, in catalog order."""
    return tuple(_hardware_from_mapping(entry) for entry in _load_yaml("hardware.yaml")["hardware"])


def _keys(item: ModelSpec | Hardware) -> list[str]:
    return [name_key(label) for label in (item.id, item.name, *item.aliases)]


@lru_cache(maxsize=1)
def _model_index() -> dict[str, ModelSpec]:
    return {key: m for m in reversed(models()) for key in _keys(m)}


@lru_cache(maxsize=1)
def _hardware_index() -> dict[str, Hardware]:
    return {key: h for h in reversed(hardware()) for key in _keys(h)}


def find_model(name: str) -> ModelSpec:
    """The catalog model called `name` (id, display name or Hugging Face repo id)."""
    found = _model_index().get(name_key(name))
    if found is None:
        known = ", ".join(m.id for m in models())
        raise NotFound(
            f"Unknown model '{name}': not a file, directory or catalog name. Catalog: {known}.", param="model"
        )
    return found


def find_hardware(name: str) -> Hardware:
    """The catalog device called `name` (id, display name or alias such as '4090' or 'h100')."""
    found = _hardware_index().get(name_key(name))
    if found is None:
        known = ", ".join(h.id for h in hardware())
        raise NotFound(f"Unknown hardware '{name}'. Catalog: {known}.", param="hardware")
    return found


_COUNT = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.+)$", re.IGNORECASE)


def parse_hardware(spec: str) -> tuple[Hardware, int | None]:
    """Parse "NAME" or "2x NAME" into a device and an explicit count (None: try 1..max_devices)."""
    match = _COUNT.match(spec)
    if match is None:
        return find_hardware(spec), None
    count = int(match.group(1))
    device = find_hardware(match.group(2))
    if not 1 <= count <= 64:
        raise InvalidRequest(f"Device count must be between 1 and 64, got {count}.", param="hardware")
    if count > device.max_devices:
        raise InvalidRequest(
            f"{device.name} is a single-device entry; '{spec}' is not meaningful.", param="hardware"
        )
    return device, count
