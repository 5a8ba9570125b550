// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title DiodeFleet
/// @notice The list of client addresses allowed to reach a fleet's
///         `protected` ports. Devices read it through `deviceWhitelist`;
///         only the owner (the admin wallet that deployed it) edits it.
/// @dev Members are kept in an array plus an index map so that listing is
///      one call and removal is O(1) (swap with the last, then pop).
///      Adding a member twice or removing a non-member changes nothing and
///      emits nothing, so batch calls can be repeated safely.
contract DiodeFleet {
    /// @notice The admin wallet: the only account that may change the list.
    address public owner;

    /// @dev The members, in no particular order (removal reorders).
    address[] private _members;

    /// @dev member => its position in `_members` plus one; 0 means absent.
    mapping(address => uint256) private _indexPlusOne;

    event MemberAdded(address indexed member);
    event MemberRemoved(address indexed member);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The caller is not the owner.
    error NotOwner();
    /// @notice The zero address cannot be a member or the owner.
    error ZeroAddress();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor() {
        owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    /// @notice Hands the fleet to another admin wallet.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function addMember(address member) external onlyOwner {
        _add(member);
    }

    function removeMember(address member) external onlyOwner {
        _remove(member);
    }

    function addMembers(address[] calldata list) external onlyOwner {
        for (uint256 i = 0; i < list.length; ++i) _add(list[i]);
    }

    function removeMembers(address[] calldata list) external onlyOwner {
        for (uint256 i = 0; i < list.length; ++i) _remove(list[i]);
    }

    /// @notice True when `client` may reach the fleet's protected ports
    ///         (the name the Diode ecosystem uses).
    function deviceWhitelist(address client) external view returns (bool) {
        return _indexPlusOne[client] != 0;
    }

    /// @notice Alias of `deviceWhitelist`.
    function isMember(address client) external view returns (bool) {
        return _indexPlusOne[client] != 0;
    }

    function members() external view returns (address[] memory) {
        return _members;
    }

    function memberCount() external view returns (uint256) {
        return _members.length;
    }

    function _add(address member) private {
        if (member == address(0)) revert ZeroAddress();
        if (_indexPlusOne[member] != 0) return;
        _members.push(member);
        _indexPlusOne[member] = _members.length;
        emit MemberAdded(member);
    }

    function _remove(address member) private {
        uint256 slot = _indexPlusOne[member];
        if (slot == 0) return;
        uint256 last = _members.length;
        if (slot != last) {
            address moved = _members[last - 1];
            _members[slot - 1] = moved;
            _indexPlusOne[moved] = slot;
        }
        _members.pop();
        delete _indexPlusOne[member];
        emit MemberRemoved(member);
    }
}
